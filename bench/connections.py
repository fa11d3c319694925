"""xend with many idle connections open, beside the same xend with none; its memory
around a burst of large posts.

One xend (sim driver, default caps). A GET of ``/xend/node/`` over the Unix socket is
timed 200 times with no other connection open, then again while 1000 idle TCP
connections are (those past the per-client cap get a 503 at once; the others are held
until the read timeout drops them): the latencies side by side, with xend's threads
and open descriptors. Then xend's RSS idle, at the peak of 40 concurrent 800 KB posts,
and 5 s after them.

    python bench/connections.py
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time

from common import percentile, print_table, proc_status, running_xend

from tests.support.home import XendHome

IDLE = 1000
GETS = 200
BURST = 40


def _gets(home: XendHome) -> list[float]:
    took = []
    with home.unix_http() as http:
        for _ in range(GETS):
            started = time.perf_counter()
            assert http.get("/xend/node/").status_code == 200
            took.append((time.perf_counter() - started) * 1000)
    return took


def _row(name: str, took: list[float], pid: int) -> list[str]:
    return [name, f"{percentile(took, 0.5):.1f}", f"{percentile(took, 0.99):.1f}",
            str(proc_status(pid)["Threads"]), str(len(os.listdir(f"/proc/{pid}/fd")))]


def _rss_mb(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / 1024


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, IDLE + 200)), hard))
    with running_xend() as home:
        pid = home.pid()
        assert pid is not None
        rows = [_row("no other connection", _gets(home), pid)]
        idle = [socket.create_connection(("127.0.0.1", home.http_port)) for _ in range(IDLE)]
        try:
            rows.append(_row(f"{IDLE} idle connections open", _gets(home), pid))
        finally:
            for sock in idle:
                sock.close()
        print_table(["GET /xend/node/", "median ms", "p99 ms", "threads", "fds"], rows)
        print()

        nested = "(a " * 2000 + "x" + ")" * 2000
        config = "(vm (name burst) " + " ".join(f"(image {nested})" for _ in range(50)) + ")"

        def post() -> None:
            with home.unix_http(timeout=120) as http:
                http.post("/xend/domain/", data={"op": "create", "config": config})

        post()
        time.sleep(3)
        before = _rss_mb(pid)
        burst = [threading.Thread(target=post) for _ in range(BURST)]
        for thread in burst:
            thread.start()
        peak = before
        while any(thread.is_alive() for thread in burst):
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.05)
        time.sleep(5)
        print_table(["xend RSS, MB", "idle", f"{BURST} posts' peak", "5 s after"],
                    [["", f"{before:.0f}", f"{peak:.0f}", f"{_rss_mb(pid):.0f}"]])


if __name__ == "__main__":
    main()
