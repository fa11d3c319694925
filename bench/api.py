"""HTTP read throughput of xend beside a bare werkzeug app serving the same bytes.

For 1, 100 and 1000 guest domains (plus Domain-0) in the table, it times
``GET /xend/domain/`` (the names) and ``GET /xend/domain/<name>`` (one domain's
info, the last guest created), then ``GET /xend/domain/?detail=1`` (every info in
one reply) at 1000. The baseline is a bare werkzeug app that answers each of those
URLs with the very bytes xend sent, on the same kind of server (threaded werkzeug
``make_server`` on 127.0.0.1), in its own process, as xend is. The client is one
keep-alive httpx client per thread over TCP 127.0.0.1.

    python bench/api.py            # 2000 requests per case
    python bench/api.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from common import (
    XendClient,
    cpu_seconds,
    create_guest,
    guest_name,
    load_average,
    percentile,
    print_table,
    read_pid,
    running_xend,
    stop_process,
)
from werkzeug import Response
from werkzeug.serving import make_server

SXP_ACCEPT = {"Accept": "application/sxp"}
SXP_MIMETYPE = "application/sxp"
GUESTS = (1, 100, 1000)
THREADS = 4  # client threads of the concurrent case


@dataclass(frozen=True)
class Settings:
    requests: int  # per case and server
    detail_requests: int  # for the big ``?detail=1`` reply
    warmup: int
    max_seconds: float  # per case and server, whatever the count


FULL = Settings(requests=2000, detail_requests=200, warmup=100, max_seconds=60.0)
QUICK = Settings(requests=200, detail_requests=20, warmup=20, max_seconds=10.0)
MAX_CREATE_SECONDS = 600.0  # for all the guests


@dataclass(frozen=True)
class Server:
    url: str
    pid: int  # whose CPU time is counted


@dataclass(frozen=True)
class Run:
    seconds: float
    latencies: list[float]
    cpu_seconds: float = 0.0  # the server's

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def ms(self, fraction: float) -> float:
        return 1000 * percentile(self.latencies, fraction)

    @property
    def cpu_ms(self) -> float:
        """The server's CPU time per request."""
        return 1000 * self.cpu_seconds / len(self.latencies)


# --- the client side --------------------------------------------------------------------


def hammer(url: str, path: str, count: int, max_seconds: float, threads: int = 1) -> Run:
    """GET ``path`` ``count`` times from ``threads`` clients; stops early at ``max_seconds``."""
    latencies: list[float] = []
    failures: list[str] = []
    start = threading.Barrier(threads + 1)
    deadline = 0.0

    def client(share: int) -> None:
        with httpx.Client(base_url=url, headers=SXP_ACCEPT, timeout=30) as http:
            start.wait()
            for _ in range(share):
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                try:
                    reply = http.get(path)
                except httpx.HTTPError as error:
                    failures.append(str(error))
                    return
                latencies.append(time.perf_counter() - sent)
                if reply.status_code != 200:
                    failures.append(f"{reply.status_code} {reply.reason_phrase}")
                    return

    workers = [threading.Thread(target=client, args=(count // threads,), daemon=True)
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.perf_counter() + max_seconds
    began = time.perf_counter()
    start.wait()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"GET {url}{path} failed: {failures[0]}")
    return Run(seconds, latencies)


# --- the baseline -----------------------------------------------------------------------


def _serve_bare(listener: socket.socket, bodies: dict[str, bytes]) -> None:
    """The bare app: the captured bytes for each URL, nothing else (runs in a child)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        query = environ.get("QUERY_STRING", "")
        body = bodies[environ["PATH_INFO"] + ("?" + query if query else "")]
        return Response(body, mimetype=SXP_MIMETYPE)(environ, start_response)

    host, port = listener.getsockname()
    make_server(host, port, app, threaded=True, fd=listener.fileno()).serve_forever()


@contextlib.contextmanager
def bare_server(bodies: dict[str, bytes]) -> Iterator[Server]:
    """A bare werkzeug server on a free 127.0.0.1 port in its own process."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    process = multiprocessing.get_context("fork").Process(
        target=_serve_bare, args=(listener, bodies), daemon=True)
    port = listener.getsockname()[1]
    try:
        with listener:  # the child has its own copy
            process.start()
        yield Server(f"http://127.0.0.1:{port}", process.pid)
    finally:
        stop_process(process)


def capture(url: str, paths: list[str]) -> dict[str, bytes]:
    """xend's reply bodies for ``paths``, to be served as they are by the bare app."""
    with httpx.Client(base_url=url, headers=SXP_ACCEPT, timeout=30) as http:
        replies = {path: http.get(path) for path in paths}
    for path, reply in replies.items():
        if reply.status_code != 200 or reply.headers["content-type"] != SXP_MIMETYPE:
            raise RuntimeError(f"xend answered GET {path} with {reply.status_code}")
    return {path: reply.content for path, reply in replies.items()}


# --- the cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    guests: int
    count: int
    threads: int = 1


def measure(server: Server, case: Case, settings: Settings) -> Run:
    began = cpu_seconds(server.pid)
    run = hammer(server.url, case.path, case.count, settings.max_seconds, case.threads)
    return Run(run.seconds, run.latencies, cpu_seconds(server.pid) - began)


def compare(case: Case, xend: Server, bare: Server, size: int,
            settings: Settings) -> tuple[list[str], list[str]]:
    """The case on xend and on the bare app, one after the other: a row of each table."""
    for server in (xend, bare):
        hammer(server.url, case.path, settings.warmup, settings.max_seconds, case.threads)
    x, b = measure(xend, case, settings), measure(bare, case, settings)
    what = [case.label, str(case.guests), str(case.threads)]
    speed = [*what, f"{size:,}", str(min(len(x.latencies), len(b.latencies))),
             f"{x.rate:,.0f}", f"{b.rate:,.0f}", f"{b.rate / x.rate:.2f}x",
             f"{x.ms(0.5):.2f}", f"{b.ms(0.5):.2f}", f"{x.ms(0.5) / b.ms(0.5):.2f}x",
             f"{x.ms(0.99):.2f}", f"{b.ms(0.99):.2f}", f"{x.ms(0.99) / b.ms(0.99):.2f}x"]
    cpu = [*what, f"{x.cpu_ms:.2f}", f"{b.cpu_ms:.2f}", f"{x.cpu_ms - b.cpu_ms:+.2f}",
           f"{x.cpu_ms / b.cpu_ms:.2f}x" if b.cpu_ms else "-"]
    return speed, cpu


def cases_at(guests: int, settings: Settings) -> list[Case]:
    one = f"/xend/domain/{guest_name(guests)}"
    cases = [Case("GET /xend/domain/", "/xend/domain/", guests, settings.requests),
             Case("GET /xend/domain/<name>", one, guests, settings.requests)]
    if guests == GUESTS[-1]:
        cases += [Case("GET /xend/domain/<name>", one, guests, settings.requests, THREADS),
                  Case("GET /xend/domain/?detail=1", "/xend/domain/?detail=1", guests,
                       settings.detail_requests)]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    settings = QUICK if parser.parse_args().quick else FULL
    print(f"load average before: {load_average()}", flush=True)

    speed_rows, cpu_rows = [], []
    with running_xend() as home, XendClient(unix_path=home.unix_path) as client:
        xend = Server(home.url, read_pid(home.pid_file))
        created = 0
        deadline = time.monotonic() + MAX_CREATE_SECONDS
        for guests in GUESTS:
            began = time.perf_counter()
            while created < guests:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"creating guests took over {MAX_CREATE_SECONDS:g} s")
                created += 1
                create_guest(client, created)
            print(f"{guests} guests in the table (created in "
                  f"{time.perf_counter() - began:.1f} s); measuring ...", flush=True)
            cases = cases_at(guests, settings)
            bodies = capture(home.url, sorted({case.path for case in cases}))
            with bare_server(bodies) as bare:
                for case in cases:
                    speed, cpu = compare(case, xend, bare, len(bodies[case.path]), settings)
                    speed_rows.append(speed)
                    cpu_rows.append(cpu)

    print(f"load average after: {load_average()}")
    print()
    print(f"xend vs a bare werkzeug app with the same bytes: {settings.requests} requests a "
          f"case ({settings.detail_requests} for ?detail=1) after {settings.warmup} of "
          f"warm-up, each server in its own process, client over TCP 127.0.0.1.")
    print("'slower' is bare req/s / xend req/s (aim <= 1.5x); latency ratios are xend/bare.")
    print()
    print_table(["request", "guests", "thr", "bytes", "n", "xend req/s", "bare req/s",
                 "slower", "xend p50", "bare p50", "p50", "xend p99", "bare p99", "p99"],
                speed_rows)
    print("(latencies in ms; 'guests' come on top of Domain-0; werkzeug's server closes "
          "the connection after every reply, so each request is a new TCP connection.)")
    print()
    print("Where the time goes: each server's own CPU time per request (ms, from /proc).")
    print()
    print_table(["request", "guests", "thr", "xend cpu", "bare cpu", "extra", "ratio"],
                cpu_rows)


if __name__ == "__main__":
    main()
