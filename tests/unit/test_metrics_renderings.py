"""The domains' part of ``/metrics`` rendered once a sample (``web/metrics_domains.py``),
with prometheus_client's own encoders and parsers over real ``Samples``."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from tests.support.processes import wait_for
from xend_actors.domain.samples import Samples
from xend_actors.hypervisor.base import DomainCounters, DomainState, HvDomain
from xend_actors.web.metrics_domains import DomainRenderings, Scrapes


def add(samples: Samples, cpu_time: float) -> int:
    domain = HvDomain(3, "web1", DomainState.BLOCKED, None, 16384, 16384, 1, -1, cpu_time)
    return samples.add(time.time(), [DomainCounters(domain, (), ())], {}, {}).seq


def test_a_sample_is_rendered_once_a_format_and_a_new_one_replaces_it() -> None:
    samples = Samples(0, 10)  # no follower: each sample rendered by the scrape that asks
    renderings = DomainRenderings(samples)
    assert renderings.body(generate_latest) == b""  # no sample yet
    add(samples, 1.5)
    first = renderings.body(generate_latest)
    assert renderings.body(generate_latest) is first  # kept, not made again
    assert b'xend_domain_cpu_seconds_total{domain="web1",id="3"} 1.5' in first

    seq = add(samples, 2.5)
    text = renderings.body(generate_latest)
    assert b"} 2.5" in text and b"} 1.5" not in text
    assert renderings.rendered(generate_latest) == seq

    # OpenMetrics' without its # EOF: what the scrape renders after it ends the body.
    families = renderings.body(openmetrics.generate_latest)
    assert b"# EOF" not in families
    parsed = {f.name: f for f in text_string_to_metric_families(
        (families + b"# EOF\n").decode())}
    assert parsed["xend_domain_cpu_seconds"].samples[0].value == 2.5
    assert renderings.rendered(openmetrics.generate_latest) == seq


def test_the_follower_renders_a_new_sample_before_the_next_scrape_asks() -> None:
    samples = Samples(0.5, 10)
    renderings = DomainRenderings(samples)
    add(samples, 1.0)
    renderings.body(generate_latest)
    renderings.body(generate_latest)  # a scraper scraping more often than the samples
    seq = add(samples, 2.0)
    wait_for(lambda: renderings.rendered(generate_latest) == seq, 5,
             "the new sample rendered with nobody asking")


def test_a_slower_scraper_has_only_the_samples_it_reads_rendered() -> None:
    # Samples every 5 s, a scraper every 15 s: each sample is rendered at its time if the
    # scraper's next scrape comes before the next sample, and those are the ones read.
    scrapes = Scrapes(0.0).then(15.0)
    rendered, read = [], []
    for sample in range(16, 60, 5):  # sample times: 16, 21, 26, ...
        if scrapes.expected_before(sample + 5 * 1.1):
            rendered.append(sample)
        if (sample + 5) // 15 > sample // 15:  # a scrape falls in this sample's period
            read.append(sample)
            scrapes = scrapes.then((sample + 5) // 15 * 15)
    assert rendered == read == [26, 41, 56]


def test_scrapes_during_new_samples_each_get_one_whole_sample() -> None:
    samples = Samples(0.01, 10)  # a follower rendering too, as the samples come
    renderings = DomainRenderings(samples)
    domains = range(1, 51)

    def add_all(k: int) -> None:
        samples.add(1000.0 + k, [DomainCounters(HvDomain(d, f"d{d}", DomainState.BLOCKED,
                                                         None, 1024, 1024, 1, -1, float(k)),
                                                (), ()) for d in domains], {}, {})

    add_all(0)
    bodies: dict[int, bytes] = {}  # by identity: a kept rendering is the same bytes
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            body = renderings.body(generate_latest)
            bodies[id(body)] = body

    scrapers = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in scrapers:
        thread.start()
    for k in range(1, 40):
        add_all(k)
        time.sleep(0.002)
    stop.set()
    for thread in scrapers:
        thread.join()
    seen = set()
    for body in bodies.values():
        found = {f.name: f.samples for f in text_families(body.decode())}
        k = found["xend_sample_timestamp_seconds"][0].value - 1000
        cpus = {s.value for s in found["xend_domain_cpu_seconds"] if s.name.endswith("_total")}
        assert cpus == {k} and len(found["xend_domain_cpu_seconds"]) == len(domains)
        seen.add(k)
    assert len(seen) > 5  # the scrapes did meet new samples
