"""xend's HTTP: the CPU a bare request costs xend, and pause/unpause latency, kept alive or not.

A sim xend with one guest, over its Unix socket (as root: no token), from a raw socket
so that the client's own cost stays out of xend's figure:

- xend's CPU (user + system, /proc/<pid>/stat) per bare ``GET /xend/``: N requests on
  one kept-alive connection, beside N requests each on a new connection (closed after
  its reply, the only way before issue 16);
- the wall time of a ``pause`` or ``unpause`` POST, on one kept-alive connection beside
  a new connection each (median, p90).

With ``--baseline-tree DIR`` (e.g. ``git archive main xend_actors | tar -x -C DIR``) a
second xend runs from that copy of the package (first on its ``PYTHONPATH``) and is
measured the same way in the same rounds, the two taking turns; its new-connection
figures are the old server's. Aims (issue 16): 0.2 ms of CPU for a bare GET, 2 ms for
a pause or an unpause on a kept-alive connection.

    python bench/http_speed.py                                  # 2000 requests a figure
    python bench/http_speed.py --quick                          # 300
    python bench/http_speed.py --baseline-tree /tmp/xend-main   # beside the old server
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from common import (
    XendClient,
    XendHome,
    cpu_seconds,
    load_average,
    percentile,
    print_table,
    running_xend,
    vm_config,
)

GET_CPU_AIM_MS = 0.2
PAUSE_AIM_MS = 2.0
GUEST = "bench-0001"
GET = b"GET /xend/ HTTP/1.1\r\nHost: xend\r\n\r\n"
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
GET_CLOSE = b"GET /xend/ HTTP/1.1\r\nHost: xend\r\nConnection: close\r\n\r\n"


def _op(op: str, close: bool = False) -> bytes:
    body = f"op={op}".encode()
    return (f"POST /xend/domain/{GUEST} HTTP/1.1\r\nHost: xend\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode() + body


class Wire:
    """Requests on one connection, each reply read whole by its Content-Length."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buffer = b""

    def exchange(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._more()
        found = LENGTH.search(self.buffer[:end])
        if found is None:
            raise RuntimeError(f"no Content-Length: {self.buffer[:200]!r}")
        length = int(found.group(1))
        while len(self.buffer) < end + 4 + length:
            self._more()
        reply = self.buffer[:end + 4 + length]
        self.buffer = self.buffer[end + 4 + length:]
        if not reply.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"not a 200: {reply[:200]!r}")
        return reply

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("xend closed the connection")
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


def once(path: Path, request: bytes) -> None:
    """One request on a new connection, read until xend closes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(request)
        reply = b""
        while data := sock.recv(65536):
            reply += data
    if b" 200 " not in reply[:20]:
        raise RuntimeError(f"not a 200: {reply[:200]!r}")


def cpu_per_request(pid: int, count: int, one: Callable[[], object]) -> float:
    """xend's CPU milliseconds per request, over ``count`` requests."""
    before = cpu_seconds(pid)
    for _ in range(count):
        one()
    return (cpu_seconds(pid) - before) * 1000 / count


def latencies(count: int, one: Callable[[str], object]) -> list[float]:
    """Wall milliseconds of ``count`` pauses and unpauses, taking turns."""
    times = []
    for number in range(count):
        op = "pause" if number % 2 == 0 else "unpause"
        started = time.perf_counter()
        one(op)
        times.append((time.perf_counter() - started) * 1000)
    return times


@contextlib.contextmanager
def xend_from(tree: str | None) -> Iterator[XendHome]:
    """A running sim xend with the guest, from this package or from ``tree``."""
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, saved]))
    try:
        with running_xend() as home:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
            with XendClient(unix_path=home.unix_path) as client:
                client.xend_domain_create(vm_config(GUEST))
                client.xend_domain_unpause(GUEST)
            yield home
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def measure(home: XendHome, count: int) -> dict[str, list[float]]:
    """This round's figures; none kept alive from a xend that closes every connection."""
    pid = home.pid()
    assert pid is not None
    path = home.unix_path
    figures: dict[str, list[float]] = {}
    for _ in range(50):  # warm: the worker threads, the code paths
        once(path, GET_CLOSE)
    pauses = max(count // 10, 20)
    figures["cpu new"] = [cpu_per_request(pid, count, lambda: once(path, GET_CLOSE))]
    figures["op new"] = latencies(pauses, lambda op: once(path, _op(op, close=True)))
    wire = Wire(path)
    try:
        for _ in range(50):
            wire.exchange(GET)
    except (RuntimeError, OSError):  # closed after its first reply: no keep-alive
        wire.close()
        return figures
    try:
        figures["cpu kept"] = [cpu_per_request(pid, count, lambda: wire.exchange(GET))]
        figures["op kept"] = latencies(pauses, lambda op: wire.exchange(_op(op)))
    finally:
        wire.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 requests a figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", help="a copy of the package to measure beside")
    args = parser.parse_args()
    count = 300 if args.quick else 2000
    trees: dict[str, str | None] = {"this xend": None}
    if args.baseline_tree:
        trees["baseline"] = str(Path(args.baseline_tree).resolve())
    results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with contextlib.ExitStack() as stack:
        homes = {name: stack.enter_context(xend_from(tree)) for name, tree in trees.items()}
        for round_ in range(args.rounds):
            order = list(homes)
            if round_ % 2:
                order.reverse()
            for name in order:
                for key, values in measure(homes[name], count).items():
                    results[name].setdefault(key, []).extend(values)
    print(f"{count} requests a figure, {args.rounds} rounds, load {load_average()}")
    mine = results["this xend"]
    rows = []
    labels = {"cpu kept": "xend CPU per bare GET, kept alive (ms)",
              "cpu new": "xend CPU per bare GET, new connection (ms)",
              "op kept": "pause/unpause, kept alive (ms, median/p90)",
              "op new": "pause/unpause, new connection (ms, median/p90)"}
    for key, label in labels.items():
        row = [label]
        for name in trees:
            values = results[name].get(key)
            if not values:
                row.append("-")
            elif key.startswith("cpu"):
                row.append(f"{statistics.median(values):.3f}")
            else:
                row.append(f"{statistics.median(values):.2f}/{percentile(values, 0.9):.2f}")
        rows.append(row)
    print_table(["measure", *trees], rows)
    kept, new = statistics.median(mine["cpu kept"]), statistics.median(mine["cpu new"])
    op_kept, op_new = statistics.median(mine["op kept"]), statistics.median(mine["op new"])
    print(f"\nthis xend: a kept-alive GET costs {kept / new:.2f}x the CPU of one on a new "
          f"connection (aim {GET_CPU_AIM_MS} ms: {kept:.3f} ms); a kept-alive pause/unpause "
          f"{op_kept / op_new:.2f}x the time of one on a new connection "
          f"(aim {PAUSE_AIM_MS} ms: {op_kept:.2f} ms)")
    if "baseline" in results:
        old = statistics.median(results["baseline"]["cpu new"])
        old_op = statistics.median(results["baseline"]["op new"])
        print(f"against the baseline's new connection each (its only way): CPU "
              f"{kept / old:.2f}x, pause/unpause {op_kept / old_op:.2f}x")


if __name__ == "__main__":
    main()
