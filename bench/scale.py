"""Growing a sim xend to thousands of domains: creates, listings, memory and threads by decade.

One xend (the sim driver, its default settings: no TCP console ports) is grown one
domain at a time, each created and unpaused through the HTTP API as a client that keeps
its connection open would (``POST /xend/domain/ op=create``, then ``op=unpause``, over
xend's Unix socket). At 10, 100, 1000, 10,000 domains (and at ``--max``) it measures:

* create + unpause: the median and p90 wall time of the next ``--sample`` of them, and
  xend's own CPU time per create (``/proc/<pid>/stat``);
* the whole ``xm list`` command (median of 3), and ``GET /xend/domain/?detail=1``,
  every domain's info in one request (median of 3);
* xend's RSS (and per domain made since the first point), threads and open files,
  and xend-simhv's RSS.

Each figure stands beside the same one at 10 domains (the issue's aim: creates stay
flat, within 1.2x), and beside the same run of an older checkout's xend (``--base``,
default /work/base, run by its own ``.venv``: in it a create lists every domain to check
the name and the event log scans all it keeps). Each tree is measured by its own Python
in a child process (``--measure``), one after the other, on a machine others share:
look at the ratios, and at the load printed.

    python bench/scale.py                        # to 2000 domains, this tree and /work/base
    python bench/scale.py --max 10000 --base ''  # to 10,000, this tree only
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from procfs import UnixConnection, cpu_seconds, proc_status

HERE = Path(__file__).resolve().parents[1]
GUEST_MB = 16
KERNEL = "/boot/vmlinuz-sim"
DECADES = (10, 100, 1000, 10_000)
AIM_CREATE_MS = 3.0
AIM_FLAT = 1.2
AIM_KIB_PER_DOMAIN = 64
XM_RUNS = DETAIL_RUNS = 3


def _request(connection: UnixConnection, method: str, url: str,
             form: dict[str, str] | None = None) -> bytes:
    body = urllib.parse.urlencode(form) if form is not None else None
    headers = {"Accept": "application/sxp"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request(method, url, body, headers)
    reply = connection.getresponse()
    data = reply.read()
    if reply.status >= 300:
        raise RuntimeError(f"{method} {url}: {reply.status} {data[:300]!r}")
    return data


def _config(name: str) -> str:
    return (f"(vm (name {name}) (memory {GUEST_MB}) "
            f"(image (linux (kernel {KERNEL}) (root '/dev/sda1 ro'))))")


def _create(connection: UnixConnection, number: int) -> float:
    """Create and unpause domain ``number``; the seconds both took."""
    name = f"scale-{number:05d}"
    began = time.perf_counter()
    _request(connection, "POST", "/xend/domain/", {"op": "create", "config": _config(name)})
    _request(connection, "POST", f"/xend/domain/{name}", {"op": "unpause"})
    return time.perf_counter() - began


def _xm_list_ms(root: Path, unix: str, domains: int) -> float:
    env = {**os.environ, "XEND_UNIX_PATH": unix}
    times = []
    for _ in range(XM_RUNS):
        began = time.perf_counter()
        done = subprocess.run([str(root / ".venv/bin/xm"), "list"], capture_output=True,
                              text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"xm list failed: {done.stderr.strip()}")
        rows = len(done.stdout.splitlines()) - 1  # the header
        if rows != domains + 1:  # and Domain-0
            raise RuntimeError(f"xm list shows {rows} domains, not {domains + 1}")
    return 1000 * statistics.median(times)


def _detail_ms(connection: UnixConnection) -> float:
    times = []
    for _ in range(DETAIL_RUNS):
        began = time.perf_counter()
        _request(connection, "GET", "/xend/domain/?detail=1")
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def _new_home(root: Path, extra: str) -> Any:
    """The tree's own test home (a folder with a config, a run dir and a store)."""
    try:
        from tests.support.home import new_home
    except ImportError:  # an older tree: one support module
        from tests.support import new_home  # type: ignore[attr-defined,no-redef]
    return new_home(extra)


def measure(root: Path, most: int, sample: int) -> None:
    """In the child: grow ``root``'s xend to ``most`` domains; a JSON line per decade."""
    sys.path[:0] = [str(root)]
    points = sorted({n for n in DECADES if n <= most} | {most})
    memory = 2048 + GUEST_MB * (most + sample * len(points))
    extra = f"(sim-memory {memory})\n(loglevel INFO)\n"
    if "console-tcp" in (root / "xend_actors/config.py").read_text():
        extra += "(console-tcp no)\n"  # the default; the tests' homes say yes
    home = _new_home(root, extra)
    try:
        started = home.xend("start")
        if started.returncode != 0:
            raise RuntimeError(f"xend did not start: {started.stderr.strip()}")
        pid = int(home.pid_file.read_text().split()[0])
        simhv = int((home.run_dir / "simhv.pid").read_text().split()[0])
        unix = str(home.unix_path)
        connection = UnixConnection(unix, 120)
        made = 0
        for point in points:
            try:
                while made < point:
                    _create(connection, made)
                    made += 1
                cpu_before = cpu_seconds(pid)
                latencies = [_create(connection, made + i) for i in range(sample)]
                made += sample
                cpu = (cpu_seconds(pid) - cpu_before) / sample
            except (RuntimeError, OSError, http.client.HTTPException) as error:
                print(json.dumps({"point": point, "made": made, "error": str(error)}),
                      flush=True)
                return
            status, simhv_status = proc_status(pid), proc_status(simhv)
            print(json.dumps({
                "point": point, "made": made,
                "p50": 1000 * statistics.median(latencies),
                "p90": 1000 * sorted(latencies)[int(0.9 * (len(latencies) - 1))],
                "cpu": 1000 * cpu,
                "xm_list": _xm_list_ms(root, unix, made),
                "detail": _detail_ms(connection),
                "rss": status["VmRSS"] / 1024, "threads": status["Threads"],
                "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "simhv_rss": simhv_status["VmRSS"] / 1024,
            }), flush=True)
        connection.close()
    finally:
        home.xend("stop", timeout=600)
        home.kill_simhv()
        shutil.rmtree(home.root, ignore_errors=True)


def _run(root: Path, most: int, sample: int) -> list[dict[str, Any]]:
    """``root``'s figures, measured by its own Python; each line shown as it comes."""
    python = root / ".venv/bin/python"
    child = subprocess.Popen(
        [str(python), str(HERE / "bench/scale.py"), "--measure", str(root),
         "--max", str(most), "--sample", str(sample)],
        stdout=subprocess.PIPE, text=True, cwd=root)
    assert child.stdout is not None
    results = []
    for line in child.stdout:
        result = json.loads(line)
        results.append(result)
        shown = {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}
        print(f"  {root.name}: {shown}", flush=True)
    if child.wait() != 0:
        print(f"  {root.name}: the measuring process failed ({child.returncode})")
    return results


def _cell(result: dict[str, Any] | None, key: str, form: str = "{:.1f}") -> str:
    if result is None or key not in result:
        return "-"
    return form.format(result[key])


def _ratio(result: dict[str, Any] | None, first: dict[str, Any] | None, key: str) -> str:
    if result is None or first is None or key not in result or key not in first:
        return "-"
    return f"{result[key] / first[key]:.2f}x"


def _per_domain(result: dict[str, Any], first: dict[str, Any] | None) -> str:
    """xend's RSS per domain made since the first point (the issue's aim: 64 KiB)."""
    if first is None or result is first or "rss" not in result:
        return "-"
    return f"{1024 * (result['rss'] - first['rss']) / (result['made'] - first['made']):.0f}"


def _table(title: str, results: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    header = ["domains", "create p50 ms", "x@10", "p90 ms", "xend CPU ms", "x@10",
              "xm list ms", "detail=1 ms", "RSS MiB", "KiB/domain", "threads", "fds",
              "simhv MiB"]
    rows = []
    first = results[0] if results and "p50" in results[0] else None
    failed = [result for result in results if "error" in result]
    for result in results:
        if "error" in result:
            continue
        rows.append([f"{result['point']:,}", _cell(result, "p50"), _ratio(result, first, "p50"),
                     _cell(result, "p90"), _cell(result, "cpu"), _ratio(result, first, "cpu"),
                     _cell(result, "xm_list", "{:.0f}"), _cell(result, "detail", "{:.0f}"),
                     _cell(result, "rss"), _per_domain(result, first),
                     _cell(result, "threads", "{}"),
                     _cell(result, "fds", "{}"), _cell(result, "simhv_rss")])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    for result in failed:
        print(f"stopped at {result['made']:,} domains: {result['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=2000, help="domains to grow to (2000)")
    parser.add_argument("--sample", type=int, default=50,
                        help="creates timed at each decade (50)")
    parser.add_argument("--base", default="/work/base",
                        help="an older checkout with its own .venv ('' for none)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure), args.max, args.sample)
        return
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    trees = [HERE] + ([Path(args.base)] if args.base else [])
    results = {tree: _run(tree, args.max, args.sample) for tree in trees}
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for tree in trees:
        _table(f"{tree} ({len(results[tree]) and results[tree][-1].get('made', 0)} domains, "
               f"create + unpause of {GUEST_MB} MiB sim guests over a kept-alive connection)",
               results[tree])
    print(f"\naims: create + unpause <= {AIM_CREATE_MS:g} ms, within {AIM_FLAT:g}x of the "
          f"figure at 10 domains up to 10,000; <= {AIM_KIB_PER_DOMAIN} KiB per domain")


if __name__ == "__main__":
    main()
