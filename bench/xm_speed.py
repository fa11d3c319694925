"""Whole ``xm`` commands, start to exit, beside the bare interpreter (and an older xm).

A sim xend with one guest: ``xm list``, ``xm pause`` and ``xm unpause`` over the Unix
socket (as root: no token), and ``xm list`` over TCP with a token; then with 1000 guests
(``--quick``: 100), ``xm list`` again. Each figure is the median of N runs of the whole
command as a user starts it (the installed ``xm`` script, byte-compiled as an installed
package is: this benchmark compiles the package first, and unsets
``PYTHONDONTWRITEBYTECODE``). Its baselines come from the same run, the variants taking
turns in each round: ``python -c pass`` on the same interpreter (the floor no xm can go
under), and, with ``--baseline-tree DIR``, the xm of another copy of the package (e.g.
``git archive main xend_actors | tar -x -C DIR``), run on the same interpreter with DIR
first on ``sys.path``. Beside the wall time it gives the CPU time the command's process
used (user + system), which a busy machine inflates far less than the wall time.

    python bench/xm_speed.py                                  # 1000 guests, 31 runs
    python bench/xm_speed.py --quick                          # 100 guests, 7 runs
    python bench/xm_speed.py --baseline-tree /tmp/xm-before   # beside an older xm
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    ROOT,
    XendClient,
    XendHome,
    create_guest,
    guest_name,
    load_average,
    print_table,
    running_xend,
)

XM = shutil.which("xm", path=os.path.dirname(sys.executable))
# The xm script's own body, for an xm found on PYTHONPATH rather than installed.
XM_STUB = "import sys; from xend_actors.xm.main import main; sys.exit(main())"
ONE_REQUEST_AIM_MS = 80
LIST_1000_AIM_MS = 165  # `virsh list --all` at 1000 domains on these machines (issue 16)


@dataclass(frozen=True)
class Settings:
    guests: int
    runs: int
    max_seconds: float  # for all the creates, whatever the count


FULL = Settings(guests=1000, runs=31, max_seconds=900.0)
QUICK = Settings(guests=100, runs=7, max_seconds=120.0)


@dataclass(frozen=True)
class Variant:
    """One way of running a command: a label and the argv before the xm arguments."""

    label: str
    argv: tuple[str, ...]
    env: dict[str, str]


def variants(baseline_tree: Path | None) -> list[Variant]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    assert XM is not None
    found = [Variant("xm", (XM,), env)]
    if baseline_tree is not None:
        found.append(Variant("baseline xm", (sys.executable, "-c", XM_STUB),
                             {**env, "PYTHONPATH": str(baseline_tree)}))
    return found


def compile_packages(baseline_tree: Path | None) -> None:
    """As an installed package is: every module of the package has its .pyc."""
    for tree in (ROOT, baseline_tree):
        if tree is not None:
            compileall.compile_dir(tree / "xend_actors", quiet=1)


@dataclass(frozen=True)
class Figure:
    """Medians of one case, in ms: wall time, and the CPU time of its process."""

    wall: float
    cpu: float


def timed(argv: tuple[str, ...], env: dict[str, str],
          check: Callable[[str], None]) -> tuple[float, float]:
    """The wall and CPU seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    # cwd "/": ``python -c`` puts its cwd first on sys.path, before the baseline's tree.
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL, cwd="/")
    took = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    check(done.stdout)
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def no_check(_: str) -> None:
    pass


def rows_are(count: int) -> Callable[[str], None]:
    def check(out: str) -> None:
        rows = len(out.splitlines()) - 1  # the header
        if rows != count:
            raise RuntimeError(f"xm list shows {rows} domains, not {count}")
    return check


def measure(runs: int, cases: dict[str, tuple[tuple[str, ...], dict[str, str],
                                              Callable[[str], None]]]) -> dict[str, Figure]:
    """The medians of each case; in each round every case runs once, the order rotating."""
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    labels = list(cases)
    for round_ in range(runs + 1):
        shift = round_ % len(labels)
        for label in labels[shift:] + labels[:shift]:
            argv, env, check = cases[label]
            took = timed(argv, env, check)
            if round_:  # the first round warms the page cache
                times[label].append(took)
    return {label: Figure(1000 * statistics.median(wall for wall, _ in values),
                          1000 * statistics.median(cpu for _, cpu in values))
            for label, values in times.items()}


def xm_cases(home: XendHome, runs: int, guests: int, which: list[Variant],
             commands: list[tuple[str, str, tuple[str, ...], Callable[[str], None]]],
             ) -> dict[str, Figure]:
    """``commands``: (label, transport, xm args, output check) for each xm variant, beside
    ``python -c pass``."""
    transports = {
        "unix": {"XEND_UNIX_PATH": str(home.unix_path)},
        "tcp": {"XEND": f"127.0.0.1:{home.http_port}", "XEND_TOKEN": home.admin_token()},
    }
    cases: dict[str, tuple[tuple[str, ...], dict[str, str], Callable[[str], None]]] = {
        "python -c pass": ((sys.executable, "-c", "pass"), which[0].env, no_check)}
    for label, transport, args, check in commands:
        for variant in which:
            cases[f"{variant.label} {label}"] = (
                (*variant.argv, *args), {**variant.env, **transports[transport]}, check)
    print(f"  {len(cases)} cases x {runs} runs with {guests} guests ...", flush=True)
    return measure(runs, cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 guests, 7 runs")
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="a folder holding another xend_actors package, to run its xm too")
    arguments = parser.parse_args()
    settings = QUICK if arguments.quick else FULL
    baseline_tree = arguments.baseline_tree
    if XM is None:
        sys.exit("the xm script is not installed beside this Python (pip install -e .)")
    if baseline_tree is not None and not (baseline_tree / "xend_actors").is_dir():
        sys.exit(f"{baseline_tree} holds no xend_actors package")
    compile_packages(baseline_tree)
    which = variants(baseline_tree)
    print(f"load average before: {load_average()}", flush=True)

    # No console TCP ports: 1000 of them would race with whatever else runs here.
    with running_xend("(console-tcp no)\n") as home, \
            XendClient(unix_path=home.unix_path) as xend:
        create_guest(xend, 1)
        guest = guest_name(1)
        small = xm_cases(home, settings.runs, 1, which, [
            ("list (unix)", "unix", ("list",), rows_are(2)),
            ("pause (unix)", "unix", ("pause", guest), no_check),
            ("unpause (unix)", "unix", ("unpause", guest), no_check),
            ("list (tcp, token)", "tcp", ("list",), rows_are(2)),
        ])
        print(f"  creating {settings.guests - 1} more guests ...", flush=True)
        deadline = time.monotonic() + settings.max_seconds
        created = 1
        while created < settings.guests and time.monotonic() < deadline:
            created += 1
            create_guest(xend, created)
        large = xm_cases(home, settings.runs, created, which, [
            (f"list, {created + 1} domains (unix)", "unix", ("list",), rows_are(created + 1)),
        ])
    print(f"load average after: {load_average()}")

    floor = small["python -c pass"]
    figures = {**small, **{k: v for k, v in large.items() if k != "python -c pass"}}
    rows = []
    for label, figure in figures.items():
        versus = ""
        if label.startswith("xm ") and f"baseline {label}" in figures:
            before = figures[f"baseline {label}"]
            versus = f"{figure.wall / before.wall:.2f}x / {figure.cpu / before.cpu:.2f}x"
        aim = (f"<= {LIST_1000_AIM_MS} ms" if "domains" in label else
               f"<= {ONE_REQUEST_AIM_MS} ms") if label.startswith("xm ") else ""
        rows.append([label, f"{figure.wall:.1f} ms", f"{figure.wall / floor.wall:.2f}x",
                     f"{figure.cpu:.1f} ms", f"+{figure.cpu - floor.cpu:.1f} ms", versus, aim])
    print()
    print(f"Whole commands, median of {settings.runs} runs each, byte-compiled; the variants "
          "took turns. CPU: the command's own process (user + system).")
    print()
    print_table(["command", "wall", "wall vs python -c pass", "CPU", "CPU over python -c pass",
                 "vs baseline xm: wall / CPU", "aim (wall)"], rows)


if __name__ == "__main__":
    main()
