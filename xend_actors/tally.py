"""xend's own counts for ``/metrics``: how long requests, asks and transfers took.

Each ``Histogram`` keeps, by its labels' values, a list of counts per bucket and their
sum: recording is a ``bisect`` and two additions under a lock, with nothing imported,
so the hot paths (every HTTP request, every ask of an actor) pay well under a
microsecond and a sim xend never loads ``prometheus_client``. The web's collector
(``web/metrics.py``) turns them into Prometheus histograms when ``/metrics`` is read.
Labels are a fixed few values each (a route's rule, a status, the asking function, a
transfer's kind), never a raw path or a domain's name.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Iterator

# Seconds: from a read answered from the snapshot to a slow create; few, since each
# route and status (each asking function) is a line per bound in every scrape.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5, 10.0)
TRANSFER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                    600.0)
DOWNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Observations by label values: counts per bucket (the last past every bound) and
    their sum."""

    def __init__(self, name: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.labels = labels
        self.buckets = buckets
        self._series: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def observe(self, values: tuple[str, ...], seconds: float) -> None:
        at = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._series[values] = [0.0] * (len(self.buckets) + 2)
            series[at] += 1
            series[-1] += seconds

    @contextlib.contextmanager
    def timed(self, *values: str) -> Iterator[None]:
        """Observe how long the block took, with ``values`` and ``ok`` or ``error``."""
        start = time.monotonic()
        result = "error"
        try:
            yield
            result = "ok"
        finally:
            self.observe((*values, result), time.monotonic() - start)

    def series(self) -> list[tuple[tuple[str, ...], list[float]]]:
        """Each label values' counts per bucket and sum (``observe``'s layout), copied."""
        with self._lock:
            return [(values, list(counts)) for values, counts in self._series.items()]


REQUESTS = Histogram("xend_http_request_duration_seconds", ("route", "method", "status"))
ASKS = Histogram("xend_actor_ask_duration_seconds", ("caller",))
TRANSFERS = Histogram("xend_transfer_duration_seconds", ("kind", "result"),
                      TRANSFER_BUCKETS)
DOWNTIME = Histogram("xend_migration_downtime_seconds", (), DOWNTIME_BUCKETS)
