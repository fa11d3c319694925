"""Time in the simulation: the injected clock, meters of accumulated time, a manual clock.

The model and the guests never read the wall clock or sleep: they ask a ``Clock`` for
the time and for timers. In xend-simhv the asyncio event loop is the clock (it has
``time()`` and ``call_later()``); tests use ``ManualClock`` and move time by hand.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> object:
        """Run ``callback`` once, ``delay`` seconds from now."""
        ...


class Meter:
    """Time accumulated at a rate: cpu seconds (rate = load) or uptime (rate 1 or 0)."""

    def __init__(self, clock: Clock, rate: float = 0.0) -> None:
        self._clock = clock
        self._rate = rate
        self._since = clock.time()
        self._total = 0.0

    def value(self) -> float:
        return self._total + self._rate * (self._clock.time() - self._since)

    def set_rate(self, rate: float) -> None:
        now = self._clock.time()
        self._total += self._rate * (now - self._since)
        self._since = now
        self._rate = rate


class ManualClock:
    """A clock that moves only when told to; timers run inside ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()  # keeps timers due at the same time in call order

    def time(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], object]) -> object:
        heapq.heappush(self._timers, (self._now + max(delay, 0.0), next(self._order), callback))
        return None

    def advance(self, seconds: float = 0.0) -> None:
        """Move time forward, running every timer that falls due, in order."""
        until = self._now + seconds
        while self._timers and self._timers[0][0] <= until:
            due, _, callback = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            callback()
        self._now = until
