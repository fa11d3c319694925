"""Self-fencing: a member's own clock for its lease, and the fence when it runs out.

etcd ends a lease TTL seconds after it last renewed it, and it renewed it no earlier
than the renewal was sent: so, counted from the send of the last renewal that worked,
the lease lives at least TTL, and no other member can take over this host's HA domains
before then. A member that has had no renewal work for half the TTL destroys its HA
domains (``act``). Why half: the other half is the fence's own margin — destroying a
domain takes a moment (a qemu is waited for), this thread may be scheduled late on a
loaded host, and the members that take over notice the expiry only then; and with a
renewal every fifth of the TTL, one lost renewal (or two) never fences.

The clock is this thread's alone (``time.monotonic``): it never waits on etcd, so a
renewal call that hangs cannot put the fence off, nor can one sent once the fence was
due and the thread not yet run (a xend woken from a hang fences, whichever thread of
it runs first). A fenced member stays fenced until it
joins again (``rejoined``): its reconcile then decides what runs where.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Fence:
    """The clock of one member's lease; ``act`` fences (on this clock's thread)."""

    def __init__(self, ttl: float, act: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.margin = ttl / 2
        self._act = act
        self._clock = clock
        self._renewed = clock()  # a xend just started had no renewal yet: as if now
        self._fenced = False
        self._changed = threading.Condition()
        self._stopping = False
        # Held while fencing: a join waits for the fence to be done before it reconciles.
        self.fencing = threading.Lock()

    @property
    def fenced(self) -> bool:
        return self._fenced

    def renewed(self, sent: float) -> None:
        """A renewal sent at ``sent`` (this clock) worked. One sent after the fence was
        due does not put it off (xend was hung, say, and its watchdog may have fenced
        meanwhile): the fence goes first, and the next join decides what runs here."""
        with self._changed:
            if sent - self._renewed < self.margin:
                self._renewed = max(self._renewed, sent)
            self._changed.notify()

    def now(self, why: str) -> None:
        """Fence at once (the lease is known to be gone, or the member leaves)."""
        self._fence(why)

    def rejoined(self, sent: float) -> None:
        """Joined again with a lease granted after ``sent``: no longer fenced."""
        with self._changed:
            self._fenced = False
            self._renewed = max(self._renewed, sent)
            self._changed.notify()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="pool-fence", daemon=True).start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()

    def _watch(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._stopping:
                        return
                    left = self._renewed + self.margin - self._clock()
                    if left <= 0 and not self._fenced:
                        break
                    self._changed.wait(left if left > 0 else None)
            self._fence(f"no lease renewal for {self.margin:g} s")

    def _fence(self, why: str) -> None:
        with self.fencing:
            with self._changed:
                if self._fenced:
                    return
                self._fenced = True
            try:
                self._act(why)
            except Exception:  # the fence thread must live on: log and go on fenced
                log.exception("Fencing failed")
