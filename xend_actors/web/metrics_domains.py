"""The domains' part of ``/metrics``: rendered once a sample, kept as bytes a format.

The per-domain families (some 6,000 lines at 1000 domains, most of a scrape's cost)
change only when the Sampler adds a sample, once a period, while scrapes come when
they like. ``DomainRenderings`` keeps, for each encoder of prometheus_client a scraper
has asked for (text, OpenMetrics), one rendering of the latest sample: bytes and the
sample's seq, replaced when a newer sample comes (so at most one a format). A scrape
of a sample not yet rendered renders it; once someone scrapes, a thread follows the
samples and renders a new one at once for each format whose next scrape is expected
before the next sample (the last scrape plus the time since the one before), so that
the scrape finds it made: a scraper every 15 s (a sample every 5 s) has every third
sample rendered, the one it reads, no more than it would render itself. The thread
ends when nobody has scraped for ``FOLLOW`` seconds. A xend nobody scrapes renders
nothing and never imports prometheus_client.

One lock covers the renderings: a scrape during a rendering waits for it and gets the
new sample whole, never a mix. The OpenMetrics rendering is kept without the encoder's
``# EOF``: the scrape's own families (``metrics.py``) come after it and end the body.

Per domain (labels ``domain``, ``id``; a device's also ``device``): ``xend_domain_state``
(1 for each of its flags, ``state``: running, blocked, paused, shutdown, crashed,
dying), ``_vcpus``, ``_cpu_seconds_total``, ``_memory_bytes``, ``_memory_max_bytes``,
``_console_bytes_total`` (what the guest wrote), ``xend_domain_vbd_read_bytes_total``,
``_vbd_written_bytes_total``, ``_vbd_reads_total``, ``_vbd_writes_total``,
``xend_domain_vif_receive_bytes_total``, ``_vif_transmit_bytes_total``,
``_vif_receive_packets_total``, ``_vif_transmit_packets_total`` (the guest's view:
transmit is what it sent); and ``xend_domains``, ``xend_sample_timestamp_seconds``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xend_actors.domain.samples import Sample, Samples
from xend_actors.hypervisor.base import DomainState

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    Encoder = Callable[[CollectorRegistry], bytes]

FOLLOW = 300.0  # seconds the samples are followed after the last scrape
SLACK = 0.1  # of a period: how late a scrape may come and still be expected before a sample
_EOF = b"# EOF\n"  # OpenMetrics' end: one, after the scrape's own families


@dataclass(frozen=True, slots=True)
class Scrapes:
    """When a format was last scraped, and how long after the scrape before it (0 for
    the first: expected again at once)."""

    last: float
    gap: float = 0.0

    def then(self, now: float) -> Scrapes:
        return Scrapes(now, now - self.last)

    def expected_before(self, moment: float) -> bool:
        return self.last + self.gap < moment


class DomainRenderings:
    """The latest sample's domain families, rendered once a format (see the module)."""

    def __init__(self, samples: Samples | None) -> None:
        self._samples = samples
        self._lock = threading.Lock()  # the renderings
        self._kept: dict[Encoder, tuple[int, bytes]] = {}
        self._state = threading.Lock()  # who asked when, and the follower
        self._asked: dict[Encoder, Scrapes] = {}
        self._follower: threading.Thread | None = None

    def body(self, encode: Encoder) -> bytes:
        """The latest sample's families as ``encode`` writes them (no ``# EOF``)."""
        if self._samples is None:
            return b""
        with self._state:
            now = time.monotonic()
            before = self._asked.get(encode)
            self._asked[encode] = before.then(now) if before is not None else Scrapes(now)
            if self._follower is None:
                self._follower = threading.Thread(target=self._follow, name="metrics",
                                                  daemon=True)
                self._follower.start()
        with self._lock:
            return self._render(encode)

    def rendered(self, encode: Encoder) -> int | None:
        """The seq of the sample kept rendered by ``encode``, if any (for the tests)."""
        kept = self._kept.get(encode)
        return kept[0] if kept is not None else None

    def _render(self, encode: Encoder) -> bytes:
        """The latest sample's rendering by ``encode``, made if it is not kept; under
        ``_lock``."""
        assert self._samples is not None
        sample = self._samples.latest()
        if sample is None:
            return b""
        kept = self._kept.get(encode)
        if kept is not None and kept[0] == sample.seq:
            return kept[1]
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(sample))  # type: ignore[arg-type]
        body = encode(registry).removesuffix(_EOF)
        self._kept[encode] = (sample.seq, body)
        return body

    def _follow(self) -> None:
        """Render each new sample for the formats whose next scrape will read it; end
        when nobody has scraped for ``FOLLOW`` seconds."""
        assert self._samples is not None
        period = self._samples.interval
        seq = -1
        while True:
            with self._state:
                now = time.monotonic()
                for gone in [e for e, s in self._asked.items() if now - s.last >= FOLLOW]:
                    del self._asked[gone]
                if not self._asked:
                    self._follower = None
                    return
            sample = self._samples.wait_newer(seq, FOLLOW)
            if sample is None:
                continue
            seq = sample.seq
            next_sample = time.monotonic() + period * (1 + SLACK)
            with self._state:
                due = [e for e, s in self._asked.items() if s.expected_before(next_sample)]
            with self._lock:
                for encode in due:
                    self._render(encode)


class _Families:
    """A collector of one sample's domain families."""

    def __init__(self, sample: Sample) -> None:
        self._sample = sample

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        return _domains(self._sample)


@functools.cache
def _words(state: DomainState) -> tuple[str, ...]:
    """The names of the flags ``state`` has (few states, many domains: each made once)."""
    return tuple(flag.name.lower() for flag in DomainState if flag.name and flag in state)


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
