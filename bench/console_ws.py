"""A console's echo latency through the API's WebSocket, beside the raw TCP console port.

One xend with ``(console-tcp yes)`` runs three guests: one is reached on its raw TCP
console port (the original's way, the baseline), one through the WebSocket
``/xend/console/<port>/attach`` on xend's TCP port with an admin token (what a remote
``xm console`` and the browser's terminal use), one through the same WebSocket on
xend's Unix socket (a local ``xm console`` as root). The WebSocket clients open the
connection with ``xm console``'s own code (``xend_actors.xm.console.upgrade``).

* latency: ``echo`` round trips, from the typed line to the prompt after its reply, in
  alternating runs of ten on each path, so the host's other load falls on all alike;
* throughput: the guest's ``flood N``, to the prompt after its last byte (the client
  decodes every frame as xm does), the ratio as the median of paired rounds.

    python bench/console_ws.py            # 2000 echoes, 7 rounds of 32 MiB floods
    python bench/console_ws.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

from common import XendClient, percentile, print_table, running_xend, sxp
from wsproto.events import BytesMessage, CloseConnection, Event, Ping

from tests.support.home import XendHome
from xend_actors.xm.console import upgrade

KERNEL = "/boot/vmlinuz-sim"
PROMPT = b"# "
CHUNK = 1 << 20
AIM = 1.5  # the WebSocket's echo latency over the raw port's, at most


@dataclass(frozen=True)
class Settings:
    echoes: int
    rounds: int
    flood_bytes: int


FULL = Settings(echoes=2000, rounds=7, flood_bytes=32 << 20)
QUICK = Settings(echoes=200, rounds=3, flood_bytes=4 << 20)


# --- two kinds of console client, one interface -------------------------------------------------


class RawConsole:
    """A client of a console's raw TCP port."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tail = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes:
        data = self.sock.recv(CHUNK)
        if not data:
            raise RuntimeError("the console closed")
        return data

    def close(self) -> None:
        self.sock.close()


class WsConsole:
    """A client of a console's WebSocket, on a socket to xend as xm makes one."""

    def __init__(self, sock: socket.socket, headers: dict[str, str], port: int) -> None:
        self.sock = sock
        self.sock.settimeout(120)
        self.ws, early = upgrade(sock, headers, f"/xend/console/{port}/attach")
        self.ready = self._bytes(early)

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def receive(self) -> bytes:
        if self.ready:
            data, self.ready = self.ready, b""
            return data
        while True:
            data = self.sock.recv(CHUNK)
            if not data:
                raise RuntimeError("the console closed")
            self.ws.receive_data(data)
            if got := self._bytes(self.ws.events()):
                return got

    def _bytes(self, events: Iterator[Event] | list[Event]) -> bytes:
        got = b""
        for event in events:
            if isinstance(event, BytesMessage):
                got += event.data
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise RuntimeError(f"the console's WebSocket closed: {event.code}")
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        self.sock.close()


Client = RawConsole | WsConsole


def read_until(client: Client, marker: bytes) -> None:
    """Read up to the end of ``marker``; every exchange here ends with a prompt."""
    seen = b""
    while not seen.endswith(marker):
        seen = (seen + client.receive())[-4096:]


def ready(client: Client) -> Client:
    client.send(b"echo ready\r")  # what the guest said before is not ours
    read_until(client, b"ready\r\n# ")
    return client


def echo(client: Client) -> float:
    """Seconds for one ``echo`` round trip."""
    began = time.perf_counter()
    client.send(b"echo ping\r")
    read_until(client, b"ping\r\n# ")
    return time.perf_counter() - began


def flood(client: Client, size: int) -> float:
    """Seconds for the guest's ``flood size``, up to the prompt after its last byte."""
    began, received, tail = time.perf_counter(), 0, b""
    client.send(f"flood {size}\r".encode())
    while received < size or tail != PROMPT:  # "# " is not in the flood's text
        data = client.receive()
        received += len(data)
        tail = (tail + data[-2:])[-2:]
    return time.perf_counter() - began


# --- the run ------------------------------------------------------------------------------------


def start_guest(xend: XendClient, name: str) -> int:
    """A running guest; its console port."""
    info = xend.xend_domain_create(["vm", ["name", name], ["memory", "32"],
                                    ["image", ["linux", ["kernel", KERNEL]]]])
    xend.xend_domain_unpause(name)
    return int(sxp.child_value(sxp.child(info, "console"), "console_port"))


@contextlib.contextmanager
def clients(home: XendHome, ports: list[int]) -> Iterator[dict[str, Client]]:
    raw_port, tcp_port, unix_port = ports
    tcp = XendClient(f"127.0.0.1:{home.http_port}", token=home.admin_token())
    unix = XendClient(unix_path=home.unix_path)
    tcp_sock = tcp.open_socket(120)
    tcp_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    made: dict[str, Client] = {
        "raw": ready(RawConsole(raw_port)),
        "tcp": ready(WsConsole(tcp_sock, tcp.socket_headers(), tcp_port)),
        "unix": ready(WsConsole(unix.open_socket(120), unix.socket_headers(), unix_port)),
    }
    try:
        yield made
    finally:
        for client in made.values():
            client.close()
        tcp.close()
        unix.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    settings = QUICK if parser.parse_args().quick else FULL
    paths = ("raw", "tcp", "unix")

    with running_xend() as home, XendClient(unix_path=home.unix_path) as xend:
        ports = [start_guest(xend, f"ws-{path}") for path in paths]
        echoes: dict[str, list[float]] = {path: [] for path in paths}
        floods: dict[str, list[float]] = {path: [] for path in paths}
        with clients(home, ports) as by_path:
            print(f"{settings.echoes} echoes and {settings.rounds} floods of "
                  f"{settings.flood_bytes >> 20} MiB on each path ...", flush=True)
            for _ in range(settings.echoes // 10):  # alternate in runs of ten
                for path in paths:
                    echoes[path] += [echo(by_path[path]) for _ in range(10)]
            for round_ in range(settings.rounds):  # each path first in turn
                for path in paths[round_ % 3:] + paths[:round_ % 3]:
                    floods[path].append(flood(by_path[path], settings.flood_bytes))

    def ms(path: str, fraction: float) -> str:
        return f"{1000 * percentile(echoes[path], fraction):.3f}"

    def rate(path: str) -> str:
        return f"{settings.flood_bytes / statistics.median(floods[path]) / 1e6:.0f}"

    def ratio(path: str, fraction: float) -> float:
        return percentile(echoes[path], fraction) / percentile(echoes["raw"], fraction)

    def flood_ratio(path: str) -> str:
        paired = (raw / other for raw, other in zip(floods["raw"], floods[path], strict=True))
        return f"{statistics.median(paired):.2f}x"

    print()
    print(f"Console echo round trips and floods through xend, on the raw TCP console port "
          f"and through the API's WebSocket ({settings.echoes} echoes and the median of "
          f"{settings.rounds} floods each; {os.cpu_count()} cpus, load average "
          f"{os.getloadavg()[0]:.2f}).")
    print()
    names = {"raw": "raw TCP console port (baseline)", "tcp": "WebSocket, TCP + token",
             "unix": "WebSocket, Unix socket"}
    print_table(["path", "echo p50 ms", "echo p99 ms", "p50 / raw", "p99 / raw",
                 "flood MB/s", "MB/s / raw"], [
        [names[path], ms(path, 0.5), ms(path, 0.99),
         "" if path == "raw" else f"{ratio(path, 0.5):.2f}x",
         "" if path == "raw" else f"{ratio(path, 0.99):.2f}x",
         rate(path), "" if path == "raw" else flood_ratio(path)]
        for path in paths
    ])
    print()
    verdict = "met" if ratio("tcp", 0.5) <= AIM else "NOT met"
    print(f"WebSocket (TCP) / raw echo latency, median: {ratio('tcp', 0.5):.2f}x "
          f"(aim <= {AIM}x: {verdict})")


if __name__ == "__main__":
    main()
