"""What metrics and samples cost: ``GET /metrics`` at 1000 sim domains, sampling's CPU on
an idle xend, and the samples' memory per domain.

* scrape: the median wall time of ``GET /metrics`` with ``--guests`` sim domains, each
  request on one kept-alive connection to the Unix socket, beside the same xend's
  ``GET /xend/domain/?detail=1`` (every domain's info in one reply) and a bare
  ``GET /xend/``, measured in the same run, alternating; the ratios are the figures.
  Then as a scraper whose period is longer than the sample's sees it: each scrape at a
  random time in the period after a new sample (the domains' families rendered anew);
* idle: the CPU xend and its xend-simhv use (``/proc/<pid>/stat``) over ``--window``
  seconds of nothing, with ``(sample-interval 5)`` and with ``(sample-interval 0)``
  (sampling off), with no domains and with ``--guests``: the difference is sampling's
  share of one core;
* memory: the samples of ``--guests`` domains kept for an hour at 5 s (720 samples,
  the rings full), measured with tracemalloc in this process: bytes per domain;
* rss: xend's RSS per domain with ``--guests`` domains, sampling off beside sampling
  with every ring full (720 samples taken at 0.1 s, as an hour's at 5 s would be).

    python bench/metrics.py                  # 1000 guests, 30 s windows
    python bench/metrics.py --guests 200 --window 10
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc

import httpx
from common import (
    cpu_seconds,
    create_guest,
    load_average,
    print_table,
    proc_status,
    read_pid,
    running_xend,
)

from tests.support.home import XendHome
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.domain.samples import Samples
from xend_actors.hypervisor.base import (
    DomainCounters,
    DomainState,
    HvDomain,
    VbdCounters,
    VifCounters,
)

RUNS = 30
AIM_SCRAPE_MS = 50.0
AIM_IDLE_PERCENT = 1.0
SXP = {"Accept": "application/sxp"}
# No raw TCP console ports: a thousand of them meet ports others on the machine hold.
QUIET = "(console-tcp no)\n"


def _fill(home: XendHome, guests: int) -> None:
    with XendClient(unix_path=home.unix_path) as client:
        for number in range(guests):
            create_guest(client, number)


def _median_ms(http: httpx.Client, path: str, runs: int, pid: int) -> tuple[float, float]:
    """The median wall time of a request, and xend's CPU per request, in ms."""
    times = []
    cpu = cpu_seconds(pid)
    for _ in range(runs):
        start = time.perf_counter()
        reply = http.get(path)
        times.append(time.perf_counter() - start)
        assert reply.status_code == 200, reply.text[:200]
    return statistics.median(times) * 1000, (cpu_seconds(pid) - cpu) / runs * 1000


def _after_new_samples(http: httpx.Client, runs: int, interval: float) -> float:
    """The median wall time of a scrape made at a random time of the period after each
    of ``runs`` new samples, in ms."""
    def seq() -> int:
        found = sxp.parse(http.get("/xend/samples/", params={"domain": "Domain-0"}).text)
        return int(sxp.child_value(found, "seq"))

    times = []
    last = seq()
    for _ in range(runs):
        deadline = time.monotonic() + 10 * interval
        while (now := seq()) == last:
            assert time.monotonic() < deadline, "no new sample"
            time.sleep(0.01)
        last = now
        time.sleep(random.uniform(0, interval * 0.8))
        start = time.perf_counter()
        assert http.get("/metrics").status_code == 200
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def scrape(guests: int) -> list[list[str]]:
    with running_xend(QUIET + "(sample-interval 1)\n") as home:
        _fill(home, guests)
        http = home.unix_http()
        http.headers.update(SXP)
        deadline = time.monotonic() + 30
        while f'id="{guests}"' not in http.get("/metrics").text:  # a sample with them all
            assert time.monotonic() < deadline, "no sample of every domain within 30 s"
            time.sleep(0.2)
        lines = http.get("/metrics").text.count("\n")
        pid = home.pid()
        assert pid is not None
        figures: dict[str, list[tuple[float, float]]] = {
            "/metrics": [], "/xend/domain/?detail=1": [], "/xend/": []}
        for _ in range(3):  # alternating, so that the load falls on each alike
            for path, found in figures.items():
                found.append(_median_ms(http, path, RUNS // 3, pid))
        fresh = _after_new_samples(http, RUNS // 3, 1.0)
        http.close()
    medians = {path: (statistics.median(w for w, _ in found),
                      statistics.median(c for _, c in found))
               for path, found in figures.items()}
    wall, cpu = medians["/metrics"]
    rows = []
    for path, (ms, cpu_ms) in medians.items():
        rows.append([f"GET {path}", f"{ms:.2f} ms", f"{wall / ms:.2f}x", f"{cpu_ms:.2f} ms",
                     f"{cpu / cpu_ms:.2f}x" if cpu_ms > 0 else "-"])
    rows[0].append(f"{lines} lines; aim <= {AIM_SCRAPE_MS:g} ms")
    for row in rows[1:]:
        row.append("")
    rows.append(["GET /metrics, a new sample each", f"{fresh:.2f} ms", "-", "-", "-",
                 f"aim <= {AIM_SCRAPE_MS:g} ms"])
    return rows


def _idle_cpu(guests: int, interval: float, window: float) -> float:
    """xend's and its xend-simhv's CPU over ``window`` idle seconds, in % of one core."""
    with running_xend(QUIET + f"(sample-interval {interval:g})\n") as home:
        _fill(home, guests)
        time.sleep(6)  # the creates' aftermath: refreshes, the event log's commits
        pids = [home.pid(), read_pid(home.run_dir / "simhv.pid")]
        assert pids[0] is not None
        before = sum(cpu_seconds(pid) for pid in pids if pid is not None)
        start = time.monotonic()
        time.sleep(window)
        used = sum(cpu_seconds(pid) for pid in pids if pid is not None) - before
        return used / (time.monotonic() - start) * 100


def idle(guests: int, window: float) -> list[list[str]]:
    rows = []
    for count in (0, guests):
        off = _idle_cpu(count, 0, window)
        on = _idle_cpu(count, 5, window)
        rows.append([f"idle, {count} domains", f"{off:.2f} %", f"{on:.2f} %",
                     f"{on - off:+.2f} %", f"aim < {AIM_IDLE_PERCENT:g} %"])
    return rows


def memory(guests: int) -> list[list[str]]:
    samples = Samples(5.0, 720)
    domains = [DomainCounters(
        HvDomain(domid, f"bench-{domid:04d}", DomainState.BLOCKED, None, 16384, 16384, 1, -1,
                 float(domid)),
        (VbdCounters(0x801, domid, domid, 1, 1),), (VifCounters(0, domid, domid, 1, 1),))
        for domid in range(guests)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seq in range(720):
        samples.add(1000.0 + seq * 5, domains, {}, {})
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rings = samples.ring_bytes()
    return [["samples, an hour at 5 s", f"{total / guests / 1024:.1f} KiB",
             f"{rings / guests / 1024:.1f} KiB", f"{(total - rings) / guests / 1024:.1f} KiB",
             "of issue 16's 64 KiB a domain"]]


def _rss_per_domain(guests: int, sampling: bool) -> tuple[float, float]:
    """xend's RSS (KiB) before the domains, and per domain once made (and, sampling, once
    their rings are full)."""
    extra = "(sample-interval 0.1)\n(sample-history 72)\n" if sampling else \
        "(sample-interval 0)\n"
    with running_xend(QUIET + extra) as home:
        pid = home.pid()
        assert pid is not None
        time.sleep(2)
        before = proc_status(pid)["VmRSS"]
        _fill(home, guests)
        if sampling:
            http = home.unix_http()
            deadline = time.monotonic() + 600
            name = f"bench-{guests - 1:04d}"
            while len(sxp.child(sxp.parse(http.get(f"/xend/domain/{name}/samples",
                                                   headers=SXP).text), "time")) <= 720:
                assert time.monotonic() < deadline, "the rings did not fill in 10 minutes"
                time.sleep(2)
            http.close()
        else:
            time.sleep(6)
        after = proc_status(pid)["VmRSS"]
        return before, (after - before) / guests


def rss(guests: int) -> list[list[str]]:
    rows = []
    for sampling in (False, True):
        before, per_domain = _rss_per_domain(guests, sampling)
        rows.append(["sampling, rings full" if sampling else "sampling off",
                     f"{before / 1024:.1f} MiB", f"{per_domain:.1f} KiB",
                     "aim <= 64 KiB a domain"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--only", choices=("scrape", "idle", "memory", "rss"))
    options = parser.parse_args()
    print(f"{options.guests} sim domains; load {load_average()}")
    if options.only in (None, "scrape"):
        print()
        print_table(["request", "median", "/metrics is", "xend CPU", "/metrics is", "notes"],
                    scrape(options.guests))
    if options.only in (None, "idle"):
        print()
        print_table(["xend + simhv CPU", "sampling off", "sampling on (5 s)", "sampling",
                     ""], idle(options.guests, options.window))
    if options.only in (None, "memory"):
        print()
        print_table(["memory per domain", "in all", "rings", "latest sample", ""],
                    memory(options.guests))
    if options.only in (None, "rss"):
        print()
        print_table(["xend RSS", "before the domains", "per domain", ""], rss(options.guests))
    print(f"\nload {load_average()}")


if __name__ == "__main__":
    main()
