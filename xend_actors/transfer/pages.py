"""The source's side of a migration's stream for a domain whose state is pages (the
sim): its memory and final state, in pre-copy rounds, throttled, with progress (the
conversation is in ``xfr/``).

Live: every page goes while the guest runs, then the pages it wrote meanwhile, round
after round until few are left (or ``MAX_PRECOPY_ROUNDS``); only then is it suspended
and the rest sent with its state, so it stops for as long as that last bit takes.
Not live: it is suspended first and everything goes once. Suspending and what to do
when it fails are the caller's (``outgoing``); this module only moves bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence

from xend_actors.transfer import xfr
from xend_actors.transfer.drivers import PagedDriver
from xend_actors.transfer.progress import Phase, Progress

MAX_PRECOPY_ROUNDS = 4
STOP_COPY_PAGES = 256  # few enough dirty pages to send with the guest stopped (1 MiB)
REPORT_SECONDS = 0.25


class Throttle:
    """Keeps a stream at most ``mbit`` Mbit/s (0: no limit) by waiting before a send
    that would run ahead of that rate."""

    def __init__(self, mbit: int) -> None:
        self.bytes_per_second = mbit * 1_000_000 / 8
        self._start = time.monotonic()
        self._sent = 0

    def sent(self, size: int) -> None:
        """``size`` more bytes went out; returns once the rate allows the next ones."""
        self._sent += size
        if self.bytes_per_second:
            ahead = self._sent / self.bytes_per_second - (time.monotonic() - self._start)
            if ahead > 0:
                time.sleep(ahead)


class Sender:
    """Streams domain ``domid``'s pages and state on ``channel``."""

    def __init__(self, channel: xfr.Channel, driver: PagedDriver, domid: int, mbit: int,
                 report: Callable[[Progress], None]) -> None:
        self._channel = channel
        self._driver = driver
        self._domid = domid
        self._throttle = Throttle(mbit)
        self._report = report
        self._digest = hashlib.sha256()
        self._start = time.monotonic()
        self._last_report = 0.0
        self.pages = driver.memory_pages(domid)
        self.phase = Phase.PRECOPY
        self.sent = 0
        self.total = 0  # grows as rounds are decided

    @property
    def memory_bytes(self) -> int:
        return self.pages * xfr.PAGE_SIZE

    def precopy(self) -> list[int]:
        """Send every page with the guest running, then what it wrote meanwhile while that
        is much; the pages written since, to be sent once it is stopped."""
        self._driver.dirty_pages(self._domid)  # the log starts now
        self.send_pages(range(self.pages))
        for _round in range(MAX_PRECOPY_ROUNDS):
            dirty = self._driver.dirty_pages(self._domid)
            if len(dirty) <= STOP_COPY_PAGES:
                return dirty
            self.send_pages(dirty)
        return self._driver.dirty_pages(self._domid)

    def stopcopy(self, pages: Sequence[int]) -> None:
        """The guest is suspended: send ``pages``, what it wrote since, and its state
        (not live: ``range(self.pages)``, every page)."""
        self.phase = Phase.STOPCOPY
        self.send_pages(sorted(set(pages) | set(self._driver.dirty_pages(self._domid))))
        state = self._driver.save_state(self._domid)
        self.total += len(state)
        self._channel.send(xfr.State(len(state), self._digest.hexdigest()))
        self._send(state)
        self.phase = Phase.COMMIT
        self._tell(force=True)

    def send_pages(self, pages: Sequence[int]) -> None:
        self.total += len(pages) * xfr.PAGE_SIZE
        for first, count in _batches(pages):
            data = self._driver.read_pages(self._domid, first, count)
            self._digest.update(data)
            self._channel.send(xfr.Pages(first, count))
            self._send(data)

    def _send(self, data: bytes) -> None:
        self._channel.send_bytes(data)
        self.sent += len(data)
        self._throttle.sent(len(data))
        self._tell()

    def _tell(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= REPORT_SECONDS:
            self._last_report = now
            self._report(Progress.since(self._start, self.phase, self.sent,
                                        max(self.total, self.sent)))


def _batches(pages: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Runs of consecutive pages, each at most ``xfr.MAX_BATCH`` long: (first, count)."""
    first = count = 0
    for page in pages:
        if count and page == first + count and count < xfr.MAX_BATCH:
            count += 1
            continue
        if count:
            yield first, count
        first, count = page, 1
    if count:
        yield first, count
