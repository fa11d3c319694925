"""Reads at 1000 sim domains: one domain's info, the list, every info in one request.

Each figure stands beside its baseline from the same run: the same measurement of a
xend from an older checkout (``--base``, default /work/base, run with its own
``.venv``), in which a read asks the DomainTable actor, which asks the Hypervisor
actor (one round trip to xend-simhv) and the Consoles, and every info is built and
shown per request. Here a read takes the table's snapshot with no actor asked, and a
domain's text is shown once until it changes.

Both xends are measured by the same client (this file, run by each tree's Python in a
child process, ``--measure``): the original xm's habit, a new connection to the Unix
socket per request, ``Accept: application/sxp``. Figures: the median wall time of a
request, and xend's own CPU time per request (``/proc/<pid>/stat`` over all the
requests). The trees are measured one after the other, the order alternating by
round, on a machine others share: look at the ratio, and at the load printed.

    python bench/read_speed.py                 # 1000 guests, this tree and /work/base
    python bench/read_speed.py --guests 100    # a short smoke run
    python bench/read_speed.py --base ''       # this tree only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from procfs import UnixConnection

HERE = Path(__file__).resolve().parents[1]
ONE_INFO_RUNS = 2000
LIST_RUNS = 200
DETAIL_RUNS = 30
AIM_INFO_MS = 0.25
AIM_DETAIL_MS = 25.0


def _get(path: str, url: str) -> bytes:
    connection = UnixConnection(path, 60)
    try:
        connection.request("GET", url, headers={"Accept": "application/sxp"})
        reply = connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"GET {url}: {reply.status} {body[:200]!r}")
        return body
    finally:
        connection.close()


def _timed(unix: str, url: str, runs: int, pid: int, cpu: Any) -> dict[str, float]:
    for _ in range(min(20, runs)):  # warm: first shown texts, caches, the allocator
        _get(unix, url)
    walls = []
    before = cpu(pid)
    for _ in range(runs):
        began = time.perf_counter()
        _get(unix, url)
        walls.append(time.perf_counter() - began)
    used = cpu(pid) - before
    return {"wall_ms": statistics.median(walls) * 1000, "cpu_ms": used / runs * 1000}


def measure(root: Path, guests: int) -> dict[str, Any]:
    """In the child: start ``root``'s xend with ``guests`` guests and time its reads."""
    sys.path[:0] = [str(root / "bench"), str(root)]
    from common import cpu_seconds, create_guest, guest_name, read_pid, running_xend

    from xend_actors.client import XendClient

    with running_xend() as home:
        began = time.monotonic()
        with XendClient(unix_path=home.unix_path) as client:
            for number in range(guests):
                create_guest(client, number)
        created = time.monotonic() - began
        pid = read_pid(home.pid_file)
        unix = str(home.unix_path)
        name = guest_name(guests // 2)
        if name.encode() not in _get(unix, f"/xend/domain/{name}"):
            raise RuntimeError(f"{name} is not in its own info")
        return {
            "root": str(root), "guests": guests, "create_s": created,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "info": _timed(unix, f"/xend/domain/{name}", ONE_INFO_RUNS, pid, cpu_seconds),
            "list": _timed(unix, "/xend/domain/", LIST_RUNS, pid, cpu_seconds),
            "detail": _timed(unix, "/xend/domain/?detail=1", DETAIL_RUNS, pid, cpu_seconds),
        }


def _per_call(call: Any, runs: int) -> dict[str, float]:
    for _ in range(min(20, runs)):
        call()
    walls = []
    before = time.process_time()
    for _ in range(runs):
        began = time.perf_counter()
        call()
        walls.append(time.perf_counter() - began)
    used = time.process_time() - before
    return {"wall_ms": statistics.median(walls) * 1000, "cpu_ms": used / runs * 1000}


def measure_in_process(guests: int) -> dict[str, Any]:
    """The read path alone, without HTTP: this tree's xend in this process (its actors
    and the simulated host in threads), read from the table's view against the actor
    path it replaced, which is still callable (``DomainTable.info``/``infos``: the table
    asks the Hypervisor and the Consoles), each followed by showing the SXP as the web
    did. CPU is the whole process's: every actor's thread and the simulated host's."""
    sys.path.insert(0, str(HERE))
    from tests.actors.xend import xend_in_process
    from xend_actors import sxp
    from xend_actors.actors import ask

    with xend_in_process(memory_mb=1024 + 16 * guests) as xend:
        for number in range(guests):
            xend.create(f"bench-{number:04d}", memory=16)
        name = f"bench-{guests // 2:04d}"
        view, table = xend.view, xend.table

        def asked_info() -> str:
            return sxp.show(ask(table.info(name)).sxpr())

        def asked_infos() -> str:
            return sxp.show([info.sxpr() for info in ask(table.infos())])

        return {
            "info": _per_call(lambda: view.info(name), ONE_INFO_RUNS),
            "info_asked": _per_call(asked_info, ONE_INFO_RUNS),
            "detail": _per_call(view.infos, DETAIL_RUNS),
            "detail_asked": _per_call(asked_infos, DETAIL_RUNS),
        }


def _run_child(root: Path, guests: int, how: str = "--measure") -> dict[str, Any]:
    python = root / ".venv" / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    where = [str(root)] if how == "--measure" else []
    done = subprocess.run([str(python), __file__, how, *where, str(guests)],
                          capture_output=True, text=True, env=env, cwd=root, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(new: float, old: float) -> str:
    return f"{old / new:.1f}x" if new > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--base", default="/work/base",
                        help="the baseline's checkout (with its own .venv); '' for none")
    parser.add_argument("--measure", nargs=2, metavar=("ROOT", "GUESTS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--in-process", type=int, metavar="GUESTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), int(args.measure[1]))))
        return
    if args.in_process:
        print(json.dumps(measure_in_process(args.in_process)))
        return
    roots = [HERE] + ([Path(args.base)] if args.base else [])
    print(f"{args.guests} sim guests; load before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    inside = _run_child(HERE, args.guests, "--in-process")
    print("\nThe read path alone, in-process (no HTTP), against the actor path it replaced:")
    print(f"{'read':24} {'wall ms':>9} {'cpu ms':>9} {'asked wall':>11} {'asked cpu':>10} "
          f"{'faster (wall, cpu)':>19}")
    for label, key in (("one info", "info"), ("every info", "detail")):
        new_, old_ = inside[key], inside[f"{key}_asked"]
        print(f"{label:24} {new_['wall_ms']:9.3f} {new_['cpu_ms']:9.3f} "
              f"{old_['wall_ms']:11.3f} {old_['cpu_ms']:10.3f} "
              f"{_ratio(new_['wall_ms'], old_['wall_ms']):>9}, "
              f"{_ratio(new_['cpu_ms'], old_['cpu_ms']):>8}")
    print("\nOver HTTP (a new connection per request, the Unix socket), against "
          f"{args.base or 'nothing'}:")
    results = {root: _run_child(root, args.guests) for root in roots}
    new = results[HERE]
    old = results.get(Path(args.base)) if args.base else None
    rows = [("one info", "info", AIM_INFO_MS), ("list of names", "list", None),
            ("every info (?detail=1)", "detail", AIM_DETAIL_MS)]
    header = f"{'GET':24} {'wall ms':>9} {'xend cpu ms':>12}"
    if old:
        header += f" {'base wall':>10} {'base cpu':>9} {'faster (wall, cpu)':>19}"
    print(header)
    for label, key, aim in rows:
        line = f"{label:24} {new[key]['wall_ms']:9.3f} {new[key]['cpu_ms']:12.3f}"
        if old:
            line += (f" {old[key]['wall_ms']:10.3f} {old[key]['cpu_ms']:9.3f} "
                     f"{_ratio(new[key]['wall_ms'], old[key]['wall_ms']):>9}, "
                     f"{_ratio(new[key]['cpu_ms'], old[key]['cpu_ms']):>8}")
        if aim is not None:
            line += f"   (aim <= {aim:g} ms)"
        print(line)
    for root, result in results.items():
        print(f"{root}: {result['guests']} creates took {result['create_s']:.1f} s; xend "
              f"then had {result['fds']} open descriptors (the HTTP server's admission "
              "lists them on each connection)")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
