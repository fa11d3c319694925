"""Creating 1000 domains through xend: create latency, memory, threads and ``xm list``.

Guests are created one after another through XendClient over xend's Unix socket.
Each figure stands beside its own baseline from the same run: the creates at the
start (few domains) against those at the end, in wall time and in xend's own CPU
time; xend's and xend-simhv's RSS and threads before against after; ``xm list``
with Domain-0 alone in the table against with every guest beside it.

    python bench/scale.py            # 1000 guests
    python bench/scale.py --quick    # 100 guests, a short smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from common import (
    XendClient,
    XendHome,
    cpu_seconds,
    create_guest,
    load_average,
    percentile,
    print_table,
    proc_status,
    read_pid,
    running_xend,
)

XM = shutil.which("xm", path=os.path.dirname(sys.executable))
VIRSH_LIST_MS = 300  # `virsh list --all` with 1000 domains on these machines; not measured here


@dataclass(frozen=True)
class Settings:
    guests: int
    window: int  # creates in each latency window, at the start and at the end
    xm_runs: int
    max_seconds: float  # for all the creates, whatever the count


FULL = Settings(guests=1000, window=50, xm_runs=5, max_seconds=900.0)
QUICK = Settings(guests=100, window=10, xm_runs=3, max_seconds=120.0)


def xm_list_ms(home: XendHome, runs: int, guests: int) -> float:
    """The median wall time of the whole ``xm list`` command, in ms."""
    env = {**os.environ, "XEND": f"127.0.0.1:{home.http_port}"}
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run([XM, "list"], capture_output=True, text=True, env=env,
                              timeout=120, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"xm list failed: {done.stderr.strip()}")
        rows = len(done.stdout.splitlines()) - 1  # the header
        if rows != guests + 1:  # and Domain-0
            raise RuntimeError(f"xm list shows {rows} domains, not {guests + 1}")
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 guests, a short smoke run")
    settings = QUICK if parser.parse_args().quick else FULL
    if XM is None:
        sys.exit("the xm script is not installed beside this Python (pip install -e .)")
    print(f"load average before: {load_average()}", flush=True)

    with running_xend() as home, XendClient(unix_path=home.unix_path) as xend:
        xend_pid = read_pid(home.pid_file)
        simhv_pid = read_pid(home.run_dir / "simhv.pid")
        xend_before, simhv_before = proc_status(xend_pid), proc_status(simhv_pid)
        xm_first = xm_list_ms(home, settings.xm_runs, guests=0)

        print(f"creating {settings.guests} guests ...", flush=True)
        latencies: list[float] = []
        cpu = [cpu_seconds(xend_pid)]  # xend's CPU time before each create and after the last
        deadline = time.monotonic() + settings.max_seconds
        for number in range(1, settings.guests + 1):
            latencies.append(create_guest(xend, number))
            cpu.append(cpu_seconds(xend_pid))
            if number % 100 == 0:
                print(f"  {number} created", flush=True)
            if time.monotonic() > deadline:
                print(f"  stopped after {settings.max_seconds:g} s", flush=True)
                break
        created = len(latencies)

        xend_after, simhv_after = proc_status(xend_pid), proc_status(simhv_pid)
        xm_last = xm_list_ms(home, settings.xm_runs, guests=created)

    print(f"load average after: {load_average()}")
    window = settings.window
    first, last = latencies[:window], latencies[-window:]
    early, late = 1000 * percentile(first, 0.5), 1000 * percentile(last, 0.5)
    cpu_early = 1000 * (cpu[window] - cpu[0]) / window
    cpu_late = 1000 * (cpu[-1] - cpu[-1 - window]) / window
    windows = f"#1-#{window} vs #{created - window + 1}-#{created}"
    rss_per_guest = (xend_after["VmRSS"] - xend_before["VmRSS"]) / created
    threads_per_guest = (xend_after["Threads"] - xend_before["Threads"]) / created
    simhv_per_guest = (simhv_after["VmRSS"] - simhv_before["VmRSS"]) / created

    print()
    print(f"{created} guests of 16 MiB created one after another through xend "
          f"(HTTP over its Unix socket), on top of Domain-0.")
    print()
    print_table(["figure", "baseline", "measured", "ratio / change", "aim"], [
        ["total create time", "", f"{sum(latencies):.1f} s",
         f"{1000 * sum(latencies) / created:.1f} ms a create", ""],
        [f"create p50: {windows}", f"{early:.1f} ms", f"{late:.1f} ms",
         f"{late / early:.2f}x", "<= 1.2x"],
        [f"create p90: {windows}", f"{1000 * percentile(first, 0.9):.1f} ms",
         f"{1000 * percentile(last, 0.9):.1f} ms",
         f"{percentile(last, 0.9) / percentile(first, 0.9):.2f}x", ""],
        [f"xend CPU a create: {windows}", f"{cpu_early:.1f} ms", f"{cpu_late:.1f} ms",
         f"{cpu_late / cpu_early:.2f}x", ""],
        ["xend RSS: start vs end", f"{xend_before['VmRSS']:,} KiB",
         f"{xend_after['VmRSS']:,} KiB", f"+{rss_per_guest:.0f} KiB a guest", "<= 150 KiB"],
        ["xend threads: start vs end", str(xend_before["Threads"]),
         str(xend_after["Threads"]), f"+{threads_per_guest:.2f} a guest", ""],
        ["xend-simhv RSS: start vs end", f"{simhv_before['VmRSS']:,} KiB",
         f"{simhv_after['VmRSS']:,} KiB", f"+{simhv_per_guest:.0f} KiB a guest", ""],
        [f"xm list, median of {settings.xm_runs}: 1 vs {created + 1} domains",
         f"{xm_first:.0f} ms", f"{xm_last:.0f} ms", f"{xm_last / xm_first:.2f}x",
         f"< {VIRSH_LIST_MS} ms"],
    ])
    print(f"(reference, NOT measured here: `virsh list --all` takes about {VIRSH_LIST_MS} ms "
          "for 1000 domains on these machines.)")


if __name__ == "__main__":
    main()
