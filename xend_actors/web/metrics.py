"""``GET /metrics``: the domains' latest sample and xend's own counts, for Prometheus.

The exposition is prometheus_client's (text, or OpenMetrics when the scraper asks for
it), imported at the first read so a xend nobody scrapes never loads it. A body is two
renderings by the same encoder, joined: the domains' families of the Sampler's latest
sample (no hypervisor asked: what the batched sample read), rendered once a sample
(``metrics_domains.py``, which names them), then the few families made at each
scrape: ``tally``'s histograms (requests by route, asks by caller, transfers and
migrations' downtime), the event bus's last number, and prometheus_client's own
process, platform and garbage-collector metrics; this last rendering ends the body
(OpenMetrics' one ``# EOF``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug import Request, Response

from xend_actors import tally
from xend_actors.web.metrics_domains import DomainRenderings
from xend_actors.web.resource import Resource
from xend_actors.web.services import Services, answer

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

PATH = "/metrics"


class MetricsResource(Resource):
    def __init__(self, services: Services) -> None:
        self.domains = DomainRenderings(services.samples)
        self.events = services.events

    def get(self, request: Request, **url_args: Any) -> Response:
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(self.domains.body(encode) + encode(self._registry),
                        content_type=content_type)

    @functools.cached_property
    def _registry(self) -> CollectorRegistry:
        from prometheus_client import (
            GC_COLLECTOR,
            PLATFORM_COLLECTOR,
            PROCESS_COLLECTOR,
            CollectorRegistry,
        )

        registry = CollectorRegistry(auto_describe=False)
        for shared in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(shared)
        # A collector by its methods: its ABC would import prometheus_client at start.
        registry.register(Collector(self._last_event))  # type: ignore[arg-type]
        return registry

    def _last_event(self) -> int:
        return answer(self.events.last_seq(), "the event bus")


class Collector:
    """The families made at each scrape, from what xend holds now."""

    def __init__(self, last_event: Callable[[], int]) -> None:
        self._last_event = last_event

    def describe(self) -> list[Any]:
        return []  # made at each scrape: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("xend_event_sequence",
                                "The number of the last event xend published",
                                value=self._last_event())
        for histogram in (tally.REQUESTS, tally.ASKS, tally.TRANSFERS, tally.DOWNTIME):
            yield _histogram(histogram)


_HELP = {
    "xend_http_request_duration_seconds":
        "How long xend took to answer an HTTP request, by route rule, method and status",
    "xend_actor_ask_duration_seconds":
        "How long an ask of an actor waited for its answer, by the asking function",
    "xend_transfer_duration_seconds":
        "How long a save, restore or migration took, by kind and result",
    "xend_migration_downtime_seconds":
        "How long a migrated guest was stopped, from its last run here to its first there",
}


def _histogram(histogram: tally.Histogram) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    bounds = [*(repr(float(b)) for b in histogram.buckets), "+Inf"]
    family = HistogramMetricFamily(histogram.name, _HELP[histogram.name],
                                   labels=histogram.labels)
    for values, counts in histogram.series():
        cumulative, running = [], 0.0
        for bound, count in zip(bounds, counts[:-1], strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(list(values), cumulative, counts[-1])
    return family
