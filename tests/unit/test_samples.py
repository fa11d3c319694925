"""The samples' rings (domain/samples.py): rates from two samples, the oldest dropped once
a ring is full, a domain that goes loses its ring, a counter that goes back counts anew."""

from __future__ import annotations

import math

from xend_actors.domain.samples import SERIES, Samples
from xend_actors.hypervisor.base import (
    DomainCounters,
    DomainState,
    HvDomain,
    VbdCounters,
    VifCounters,
)


def domain(domid: int, cpu: float, *, name: str = "", read: int = 0, sent: int = 0,
           memory_kb: int = 32768) -> DomainCounters:
    return DomainCounters(
        HvDomain(domid, name or f"d{domid}", DomainState.BLOCKED, None, memory_kb, memory_kb,
                 1, -1, cpu),
        (VbdCounters(0x801, read, 0, read // 512, 0),),
        (VifCounters(0, 0, sent, 0, sent // 100),))


def test_rates_come_from_the_last_two_samples() -> None:
    samples = Samples(5.0, 10)
    first = samples.add(100.0, [domain(1, 10.0)], {1: 7}, {1: {0x801: "sda1"}})
    assert all(math.isnan(r) for i, r in enumerate(first.readings[0].rates)
               if SERIES[i] != "memory")
    second = samples.add(105.0, [domain(1, 11.0, read=5120, sent=1000)], {1: 9}, {})
    reading = second.readings[0]
    rates = dict(zip(SERIES, reading.rates, strict=True))
    assert rates["cpu"] == 0.2 and rates["vbd_read"] == 1024.0 and rates["vif_tx"] == 200.0
    assert rates["memory"] == 32768 * 1024
    assert reading.console_bytes == 9 and reading.vbd_names == ("2049",)  # no name known
    assert first.readings[0].vbd_names == ("sda1",)
    assert reading.totals()[0] == 5120 and reading.totals()[5] == 1000


def test_a_full_ring_keeps_the_newest_samples() -> None:
    samples = Samples(5.0, 4)
    for seq in range(7):
        samples.add(100.0 + seq * 5, [domain(1, float(seq))], {}, {})
    history = samples.history(1)
    assert history is not None
    assert history.times == (115.0, 120.0, 125.0, 130.0)
    assert history.series["cpu"] == (0.2, 0.2, 0.2, 0.2)
    assert history.last_seq == 6
    newer = samples.history(1, since=5)
    assert newer is not None and newer.times == (130.0,)


def test_a_domain_that_goes_loses_its_ring_and_a_new_one_under_its_id_starts_afresh() -> None:
    samples = Samples(5.0, 10)
    samples.add(100.0, [domain(1, 1.0), domain(2, 1.0)], {}, {})
    samples.add(105.0, [domain(1, 2.0)], {}, {})
    assert samples.history(2) is None
    samples.add(110.0, [domain(1, 0.5, name="other")], {}, {})  # id 1 given to another
    history = samples.history(1)
    assert history is not None and history.name == "other" and len(history.times) == 1
    assert math.isnan(history.series["cpu"][0])


def test_a_counter_that_goes_back_counts_from_zero() -> None:
    samples = Samples(5.0, 10)
    samples.add(100.0, [domain(1, 50.0)], {}, {})
    reading = samples.add(105.0, [domain(1, 1.0)], {}, {}).readings[0]  # a rebooted qemu
    assert reading.rates[SERIES.index("cpu")] == 0.2


def test_a_full_ring_costs_its_floats() -> None:
    samples = Samples(5.0, 720)
    for seq in range(720):
        samples.add(seq * 5.0, [domain(1, seq / 100)], {}, {})
    assert samples.ring_bytes() == 720 * len(SERIES) * 2  # half floats
    history = samples.history(1)
    assert history is not None and history.series["cpu"][-1] == 0.002


def test_a_ring_keeps_three_significant_digits_of_any_rate() -> None:
    samples = Samples(5.0, 10)
    samples.add(100.0, [domain(1, 0.0, memory_kb=256 << 20)], {}, {})  # 256 GiB
    samples.add(105.0, [domain(1, 5.0, read=5 * 3_000_000_000, sent=5 * 3, memory_kb=256 << 20)],
                {}, {})
    history = samples.history(1)
    assert history is not None
    assert history.series["memory"][-1] == float(256 << 30)
    assert abs(history.series["vbd_read"][-1] - 3e9) / 3e9 < 1e-3  # 3 GB/s
    assert abs(history.series["vif_tx"][-1] - 3) / 3 < 1e-2  # 3 bytes a second
