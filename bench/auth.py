"""What the HTTP door's locks cost a request: token auth beside ``(xend-http-auth no)``,
and TLS beside plain HTTP with the same token.

Three xends run side by side, each in its own process on 127.0.0.1 with Domain-0 alone:

* open:  ``(xend-http-auth no)``, the original's door: nobody is asked;
* token: the default: every request carries ``Authorization: Bearer`` (an admin token);
* tls:   the default plus ``(xend-tls yes)``: the same token over TLS, the self-signed
  certificate verified (``XEND_CA``-style) by the client.

One client (httpx, one thread) sends GETs to each in turn, in alternating rounds. A
round's ratio compares the two xends measured back to back, so the host's other load
slows both; the figure is the median of the rounds' ratios. Beside the latency, each
xend's own CPU time per request (from /proc).

werkzeug's server, as xend runs it, closes the connection after every reply (keep-alive
is issue 16's), so every request is a new TCP connection and, under TLS, a new full
handshake (ECDSA P-256, TLS 1.3): this is the cost per new connection, an upper bound
of what a keep-alive connection would pay.

    python bench/auth.py            # 7 rounds of 1000 requests per xend and URL
    python bench/auth.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import statistics
import time
from dataclasses import dataclass

import httpx
from common import cpu_seconds, load_average, percentile, print_table, read_pid, running_xend

from tests.support.home import SXP_ACCEPT, XendHome

PATHS = ("/xend/domain/", "/xend/domain/Domain-0")
AIM_TOKEN = 1.1  # token / open
AIM_TLS = 1.3  # tls / token


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int  # per round, xend and URL
    warmup: int


FULL = Settings(rounds=7, requests=1000, warmup=100)
QUICK = Settings(rounds=2, requests=100, warmup=20)


@dataclass(frozen=True)
class Door:
    """One xend and how the client reaches it."""

    name: str
    url: str
    pid: int
    token: str = ""
    verify: ssl.SSLContext | bool = False

    def client(self) -> httpx.Client:
        headers = {**SXP_ACCEPT, **({"Authorization": f"Bearer {self.token}"}
                                    if self.token else {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=self.verify)


@dataclass(frozen=True)
class Run:
    seconds: float
    latencies: list[float]
    cpu_seconds: float  # the xend's

    @property
    def p50_ms(self) -> float:
        return 1000 * percentile(self.latencies, 0.5)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / len(self.latencies)


def measure(door: Door, path: str, count: int) -> Run:
    latencies = []
    with door.client() as http:
        began_cpu, began = cpu_seconds(door.pid), time.perf_counter()
        for _ in range(count):
            sent = time.perf_counter()
            reply = http.get(path)
            latencies.append(time.perf_counter() - sent)
            if reply.status_code != 200:
                raise RuntimeError(f"{door.name}: GET {path}: {reply.status_code} {reply.text}")
        seconds = time.perf_counter() - began
    return Run(seconds, latencies, cpu_seconds(door.pid) - began_cpu)


def door(name: str, home: XendHome, tls: bool = False) -> Door:
    pid = read_pid(home.pid_file)
    if name == "open":
        return Door(name, home.url, pid)
    if not tls:
        return Door(name, home.url, pid, home.admin_token())
    context = ssl.create_default_context(cafile=home.dbroot / "tls" / "cert.pem")
    return Door(name, f"https://127.0.0.1:{home.http_port}", pid, home.admin_token(), context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    settings = QUICK if parser.parse_args().quick else FULL
    print(f"load average before: {load_average()}", flush=True)

    with contextlib.ExitStack() as stack:
        doors = [
            door("open", stack.enter_context(running_xend("(xend-http-auth no)\n"))),
            door("token", stack.enter_context(running_xend())),
            door("tls", stack.enter_context(running_xend("(xend-tls yes)\n")), tls=True),
        ]
        runs: dict[tuple[str, str], list[Run]] = {}
        for path in PATHS:
            for each in doors:
                measure(each, path, settings.warmup)
            for number in range(settings.rounds):
                for each in doors:
                    runs.setdefault((path, each.name), []).append(
                        measure(each, path, settings.requests))
                print(f"{path}: round {number + 1} of {settings.rounds} done", flush=True)
    print(f"load average after: {load_average()}")
    print()
    print(f"{settings.rounds} rounds of {settings.requests} sequential GETs per xend and URL, "
          f"one client thread, after {settings.warmup} of warm-up; each xend in its own "
          "process, client over TCP 127.0.0.1, a new connection per request (werkzeug closes "
          "each). Ratios: the median of the rounds' ratios; figures: medians over the rounds.")
    print(f"Aims: token/open <= {AIM_TOKEN}x, tls/token <= {AIM_TLS}x.")
    print()

    def median(path: str, name: str, figure: str) -> float:
        return statistics.median(getattr(run, figure) for run in runs[path, name])

    def ratio(path: str, name: str, base: str, figure: str, inverse: bool = False) -> str:
        pairs = zip(runs[path, name], runs[path, base], strict=True)
        values = [getattr(b, figure) / getattr(a, figure) if inverse
                  else getattr(a, figure) / getattr(b, figure) for a, b in pairs]
        return f"{statistics.median(values):.2f}x"

    rows, cpu_rows = [], []
    for path in PATHS:
        for name, base in (("token", "open"), ("tls", "token")):
            rows.append([f"GET {path}", f"{name}/{base}",
                         f"{median(path, name, 'rate'):,.0f}",
                         f"{median(path, base, 'rate'):,.0f}",
                         ratio(path, name, base, "rate", inverse=True),
                         f"{median(path, name, 'p50_ms'):.2f}",
                         f"{median(path, base, 'p50_ms'):.2f}",
                         ratio(path, name, base, "p50_ms")])
            cpu_rows.append([f"GET {path}", f"{name}/{base}",
                             f"{median(path, name, 'cpu_ms'):.3f}",
                             f"{median(path, base, 'cpu_ms'):.3f}",
                             f"{median(path, name, 'cpu_ms') - median(path, base, 'cpu_ms'):+.3f}",
                             ratio(path, name, base, "cpu_ms")])
    print_table(["request", "door/base", "req/s", "base req/s", "slower", "p50 ms",
                 "base p50", "p50"], rows)
    print("('slower' is base req/s / door req/s; p50 is door/base.)")
    print()
    print("Where the time goes: each xend's own CPU time per request (ms, from /proc).")
    print()
    print_table(["request", "door/base", "cpu ms", "base cpu", "extra", "ratio"], cpu_rows)


if __name__ == "__main__":
    main()
