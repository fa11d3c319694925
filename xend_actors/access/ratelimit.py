"""Brute force held off: a client that fails to authenticate too often is refused a while.

Counted per client address (TCP) over a sliding window; a success does not reset the
count, so interleaving one good guess does not buy more bad ones. The table of clients
is bounded: when it is full, the client with the oldest failure is forgotten.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW = 60.0  # seconds
MAX_CLIENTS = 4096


class FailureLimiter:
    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked_for(self, client: str) -> float:
        """Seconds ``client`` must still wait before it may try again; 0 if it may now."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return 0.0
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return 0.0
            if len(times) < self.max_failures:
                return 0.0
            return times[0] + self.window - now

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._failures.pop(client, None) or deque(maxlen=self.max_failures)
            times.append(self._clock())
            self._failures[client] = times  # now the newest
            while len(self._failures) > MAX_CLIENTS:
                self._failures.popitem(last=False)
