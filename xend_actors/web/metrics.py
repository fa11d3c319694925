"""``GET /metrics``: the domains' latest sample and xend's own counts, for Prometheus.

The exposition is prometheus_client's (text, or OpenMetrics when the scraper asks for
it), imported at the first read so a xend nobody scrapes never loads it. A custom
collector yields metric families made at each scrape from the Sampler's latest sample
(no hypervisor asked: what the batched sample read) and from ``tally``'s histograms
(requests by route, asks by caller, transfers and migrations' downtime); the event
bus is asked its last number. The registry also has prometheus_client's own process,
platform and garbage-collector metrics.

Per domain (labels ``domain``, ``id``; a device's also ``device``): ``xend_domain_state``
(1 for each of its flags, ``state``: running, blocked, paused, shutdown, crashed,
dying), ``_vcpus``, ``_cpu_seconds_total``, ``_memory_bytes``, ``_memory_max_bytes``,
``_console_bytes_total`` (what the guest wrote), ``xend_domain_vbd_read_bytes_total``,
``_vbd_written_bytes_total``, ``_vbd_reads_total``, ``_vbd_writes_total``,
``xend_domain_vif_receive_bytes_total``, ``_vif_transmit_bytes_total``,
``_vif_receive_packets_total``, ``_vif_transmit_packets_total`` (the guest's view:
transmit is what it sent).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug import Request, Response

from xend_actors import tally
from xend_actors.domain.samples import Sample, Samples
from xend_actors.hypervisor.base import DomainState
from xend_actors.web.resource import Resource
from xend_actors.web.services import Services, answer

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

PATH = "/metrics"


@functools.cache
def _words(state: DomainState) -> tuple[str, ...]:
    """The names of the flags ``state`` has (few states, many domains: each made once)."""
    return tuple(flag.name.lower() for flag in DomainState if flag.name and flag in state)


class MetricsResource(Resource):
    def __init__(self, services: Services) -> None:
        self.samples = services.samples
        self.events = services.events

    def get(self, request: Request, **url_args: Any) -> Response:
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encode(self._registry), content_type=content_type)

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
        registry.register(Collector(self.samples, self._last_event))  # type: ignore[arg-type]
        return registry

    def _last_event(self) -> int:
        return answer(self.events.last_seq(), "the event bus")


class Collector:
    """The families of one scrape, made from what xend holds now."""

    def __init__(self, samples: Samples | None, last_event: Callable[[], int]) -> None:
        self._samples = samples
        self._last_event = last_event

    def describe(self) -> list[Any]:
        return []  # made at each scrape: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        sample = self._samples.latest() if self._samples is not None else None
        if sample is not None:
            yield from _domains(sample)
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


def _domains(sample: Sample) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    ids = ["domain", "id"]
    devices = ["domain", "id", "device"]

    def gauge(name: str, text: str, labels: list[str] = ids) -> Any:
        return GaugeMetricFamily(name, text, labels=labels)

    def counter(name: str, text: str, labels: list[str] = ids) -> Any:
        return CounterMetricFamily(name, text, labels=labels)

    state = gauge("xend_domain_state", "1 for each flag the domain's state has",
                  ["domain", "id", "state"])
    vcpus = gauge("xend_domain_vcpus", "The domain's virtual cpus")
    cpu = counter("xend_domain_cpu_seconds", "Cpu time the domain has used")
    memory = gauge("xend_domain_memory_bytes", "The domain's memory")
    maxmem = gauge("xend_domain_memory_max_bytes", "The most memory the domain may have")
    console = counter("xend_domain_console_bytes", "Bytes the guest wrote to its console")
    vbd = [counter(f"xend_domain_vbd_{what}", text, devices) for what, text in (
        ("read_bytes", "Bytes the guest read from the vbd"),
        ("written_bytes", "Bytes the guest wrote to the vbd"),
        ("reads", "Reads the guest made of the vbd"),
        ("writes", "Writes the guest made to the vbd"))]
    vif = [counter(f"xend_domain_vif_{what}", text, devices) for what, text in (
        ("receive_bytes", "Bytes the guest received on the vif"),
        ("transmit_bytes", "Bytes the guest sent on the vif"),
        ("receive_packets", "Packets the guest received on the vif"),
        ("transmit_packets", "Packets the guest sent on the vif"))]
    for reading in sample.readings:
        hv = reading.counters.domain
        labels = [hv.name, str(hv.domid)]
        for word in _words(hv.state):
            state.add_metric([*labels, word], 1)
        vcpus.add_metric(labels, hv.vcpus)
        cpu.add_metric(labels, hv.cpu_time)
        memory.add_metric(labels, hv.memory_kb * 1024)
        maxmem.add_metric(labels, hv.maxmem_kb * 1024)
        console.add_metric(labels, reading.console_bytes)
        for name, v in zip(reading.vbd_names, reading.counters.vbds, strict=True):
            for family, value in zip(vbd, (v.read_bytes, v.write_bytes, v.read_ops,
                                           v.write_ops), strict=True):
                family.add_metric([*labels, name], value)
        for n in reading.counters.vifs:
            for family, value in zip(vif, (n.rx_bytes, n.tx_bytes, n.rx_packets,
                                           n.tx_packets), strict=True):
                family.add_metric([*labels, f"eth{n.handle}"], value)
    domains = gauge("xend_domains", "The domains the hypervisor has, Domain-0 included", [])
    domains.add_metric([], len(sample.readings))
    taken = gauge("xend_sample_timestamp_seconds", "When the latest sample was taken", [])
    taken.add_metric([], sample.time)
    yield from (domains, taken, state, vcpus, cpu, memory, maxmem, console, *vbd, *vif)
