"""A xend's events as a test reads them: from the event API, never grepped from the log."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import httpx

from tests.support.home import XendHome
from xend_actors import sxp
from xend_actors.events.event import Event


def event_line(event: Event) -> str:
    """An event as ``NAME VALUE``, the way xend's log shows it."""
    return f"{event.name} {sxp.show(event.value)}"


class Events:
    """A xend's events, read from its event API (``GET /xend/event/?since=N``).

    ``since`` is where a test's view begins: ``mark()`` moves it to the last event so far
    (a shared xend marks it when each test begins), so ``lines()`` and ``wait()`` see the
    events of this test only.
    """

    def __init__(self, home: XendHome) -> None:
        self.home = home
        self.since = 0
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def fetch(self, since: int, timeout: float = 0) -> list[Event]:
        """One long-poll: the events after ``since``, waiting up to ``timeout`` s for one."""
        params = {"since": since, "timeout": math.ceil(timeout)}
        for attempt in (1, 2):
            if self._http is None:
                self._http = self.home.unix_http(timeout=timeout + 30)
            try:
                reply = self._http.get("/xend/event/", params=params,
                                       timeout=timeout + 30)
                break
            except httpx.TransportError:  # a connection to a xend that has been restarted
                self.close()
                if attempt == 2:
                    raise
        assert reply.status_code == 200, reply.text
        return [Event.from_record(record) for record in sxp.parse(reply.text)]

    def all(self, since: int | None = None) -> list[Event]:
        """Every event after ``since`` (default: the mark) that xend has now."""
        seen: list[Event] = []
        after = self.since if since is None else since
        while batch := self.fetch(seen[-1].seq if seen else after):
            seen += batch
        return seen

    def last(self) -> int:
        """The number of the last event so far."""
        last = self.since
        while batch := self.fetch(last):
            last = batch[-1].seq
        return last

    def mark(self) -> int:
        """Begin the view after the last event so far; that event's number."""
        self.since = self.last()
        return self.since

    def lines(self, since: int | None = None) -> list[str]:
        """The events after ``since`` (default: the mark) as ``NAME VALUE`` lines."""
        return [event_line(event) for event in self.all(since)]

    def has(self, line: str) -> bool:
        return line in self.lines()

    def wait(self, name: str, value: sxp.Value | None = None, *,
             match: Callable[[Event], bool] | None = None, since: int | None = None,
             timeout: float = 30.0) -> Event:
        """The first event after ``since`` (default: the mark) called ``name`` with ``value``
        (any value if None) for which ``match`` holds; waits for it up to ``timeout`` s."""
        after = self.since if since is None else since
        deadline = time.monotonic() + timeout
        seen: list[Event] = []
        while True:
            left = deadline - time.monotonic()
            batch = self.fetch(after, timeout=min(5.0, max(left, 0.0)))
            for event in batch:
                if (event.name == name and (value is None or event.value == value)
                        and (match is None or match(event))):
                    return event
            seen += batch
            if batch:
                after = batch[-1].seq
            elif left <= 0:
                wanted = name if value is None else f"{name} {sxp.show(value)}"
                raise AssertionError(
                    f"no event {wanted} within {timeout:g} s; events after the mark: "
                    f"{[event_line(e) for e in seen][-30:]}{self.home.log_tail()}")

    def wait_line(self, line: str, since: int | None = None, timeout: float = 30.0) -> Event:
        """Wait for the event that reads ``NAME VALUE`` (as in the log)."""
        name, _, value = line.partition(" ")
        return self.wait(name, match=lambda e: sxp.show(e.value) == value, since=since,
                         timeout=timeout)

    def count(self, line: str) -> int:
        return self.lines().count(line)
