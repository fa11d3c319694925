"""What the benchmarks share: a whole xend in a temporary folder, domains, figures.

A xend is started the way the integration tests start one (``tests/support.py``):
its own folder under /tmp, 127.0.0.1 and a Unix socket, the simulated hypervisor.
``running_xend`` stops xend and kills its xend-simhv however the benchmark ends.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python bench/x.py``: the tests' helpers live beside
    sys.path.insert(0, str(ROOT))

from procfs import cpu_seconds, proc_status  # noqa: E402, F401 (benchmarks import them from here)

from tests.support.home import XendHome, new_home  # noqa: E402
from tests.support.ports import free_port_base  # noqa: E402
from xend_actors import sxp  # noqa: E402
from xend_actors.client import XendClient  # noqa: E402

GUEST_MB = 16
KERNEL = "/boot/vmlinuz-sim"
CONSOLE_PORTS = 1100  # console port = base + domain id: room for 1000 guests and more
def bench_config() -> str:
    """The benchmark's settings, before the tests' defaults (the first occurrence wins)."""
    # 1000 guests of 16 MiB fit in the simulated host, with Domain-0's share beside them.
    return ("(sim-memory 65536)\n"
            "(console-address 127.0.0.1)\n"
            f"(console-port-base {free_port_base(span=CONSOLE_PORTS)})\n")


@contextlib.contextmanager
def running_xend(extra: str = "") -> Iterator[XendHome]:
    """A started xend (sim driver), with config lines ``extra`` first; stopped, its simhv
    killed, its folder removed at exit."""
    home = new_home(extra + bench_config())
    try:
        started = home.xend("start")
        if started.returncode != 0:
            raise RuntimeError(f"xend did not start: {started.stderr.strip()}")
        yield home
    finally:
        home.xend("stop")
        home.kill_fence()  # a pool member's watchdog outlives xend, as its simhv does
        home.kill_simhv()
        shutil.rmtree(home.root, ignore_errors=True)


def guest_name(number: int) -> str:
    return f"bench-{number:04d}"


def vm_config(name: str) -> sxp.Value:
    return ["vm", ["name", name], ["memory", str(GUEST_MB)],
            ["image", ["linux", ["kernel", KERNEL], ["root", "/dev/sda1 ro"]]]]


def create_guest(client: XendClient, number: int) -> float:
    """Create guest ``number`` through xend; returns the seconds the create took."""
    start = time.perf_counter()
    client.xend_domain_create(vm_config(guest_name(number)))
    return time.perf_counter() - start


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` 0.5 is the median)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def read_pid(pid_file: Path) -> int:
    return int(pid_file.read_text().split()[0])


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Rows under a header, the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    print(line(header))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def stop_process(process: multiprocessing.process.BaseProcess) -> None:
    """End a helper process the benchmark started: politely, then for sure."""
    if process.pid is not None:
        process.terminate()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
