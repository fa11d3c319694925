"""Console throughput and latency through xend's relay, beside a plain socket relay.

Three guests run on one xend. Guest A is reached through xend's console port; guest
B through a plain relay: a minimal asyncio pump, in its own process as xend is,
between a TCP client and B's console channel opened straight from xend-simhv
(``SimDriver.open_console``, which takes B's channel away from xend). The same
client code measures both, in alternating rounds:

* throughput: the guest's ``flood N`` (N bytes as fast as the console takes them),
  from typing the command to the prompt after the last byte; the ratio is the
  median of the paired rounds' ratios, as the host's other load slows both;
* latency: ``echo`` round trips, from the typed line to the prompt after its reply;
* the same echo through xend while a third guest floods through xend at once
  (every console shares one event loop in xend).

    python bench/console.py            # 9 rounds of 64 MiB floods, 500 echoes each
    python bench/console.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import XendClient, percentile, print_table, running_xend, stop_process, sxp

from xend_actors.hypervisor.sim.driver import SimDriver

KERNEL = "/boot/vmlinuz-sim"
PROMPT = b"# "
CHUNK = 1 << 20
AIM = 0.8  # of the plain relay's throughput


@dataclass(frozen=True)
class Settings:
    rounds: int
    flood_bytes: int
    echoes: int


FULL = Settings(rounds=9, flood_bytes=64 << 20, echoes=500)
QUICK = Settings(rounds=3, flood_bytes=8 << 20, echoes=50)


# --- a console client -------------------------------------------------------------------------


class Console:
    """A TCP client of a console, reading with a deadline."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray(CHUNK)
        self.sock.sendall(b"echo ready\r")  # what the guest said before is not ours
        self.read_until(b"ready\r\n# ")

    def close(self) -> None:
        self.sock.close()

    def read_until(self, marker: bytes) -> None:
        """Read up to the end of ``marker``; every exchange here ends with a prompt, so
        nothing follows it."""
        seen = b""
        while not seen.endswith(marker):
            data = self.sock.recv(CHUNK)
            if not data:
                raise RuntimeError(f"the console closed; last bytes {seen[-200:]!r}")
            seen += data

    def flood(self, size: int) -> float:
        """Seconds for the guest's ``flood size``, up to the prompt after its last byte."""
        began, received, tail = time.perf_counter(), 0, b""
        self.sock.sendall(f"flood {size}\r".encode())
        view = memoryview(self.buffer)
        while received < size or tail != PROMPT:  # "# " is not in the flood's text
            count = self.sock.recv_into(view)
            if not count:
                raise RuntimeError("the console closed during a flood")
            received += count
            tail = (tail + bytes(view[max(0, count - 2):count]))[-2:]
        return time.perf_counter() - began

    def echo(self) -> float:
        """Seconds for one ``echo`` round trip."""
        began = time.perf_counter()
        self.sock.sendall(b"echo ping\r")
        self.read_until(b"ping\r\n# ")
        return time.perf_counter() - began


@contextlib.contextmanager
def console(port: int) -> Iterator[Console]:
    client = Console(port)
    try:
        yield client
    finally:
        client.close()


# --- the plain relay ------------------------------------------------------------------------------


class _Pump(asyncio.Protocol):
    """One end of the plain relay: what it reads goes out the other end; when the
    other end cannot send more, this one stops reading."""

    def __init__(self) -> None:
        self.other: _Pump
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []  # what came before this end was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        for data in self.early:
            transport.write(data)

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.early.append(data)
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.other.send(data)

    def pause_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other.transport is not None:
            self.other.transport.close()


def _serve_plain(listener: socket.socket, simhv: Path, domid: int) -> None:
    """The plain relay: TCP client ⇄ the guest's console channel (runs in a child)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it

    async def attach(end: _Pump, sock: socket.socket) -> None:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: end, sock)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        driver = SimDriver(simhv)
        while True:
            client, _ = await loop.sock_accept(listener)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as xend's are
            guest_end, client_end = _Pump(), _Pump()
            guest_end.other, client_end.other = client_end, guest_end
            await attach(guest_end, driver.open_console(domid))
            await attach(client_end, client)

    asyncio.run(serve())


@contextlib.contextmanager
def plain_relay(simhv: Path, domid: int) -> Iterator[int]:
    """A plain relay to domain ``domid``'s console on a free port, in its own process."""
    listener = socket.create_server(("127.0.0.1", 0))
    process = multiprocessing.get_context("fork").Process(
        target=_serve_plain, args=(listener, simhv, domid), daemon=True)
    try:
        with listener:  # the child has its own copy
            process.start()
            port = listener.getsockname()[1]
        yield port
    finally:
        stop_process(process)


# --- the run ------------------------------------------------------------------------------------


def start_guest(xend: XendClient, name: str) -> tuple[int, int]:
    """A running guest: its domain id and console port."""
    info = xend.xend_domain_create(["vm", ["name", name], ["memory", "32"],
                                    ["image", ["linux", ["kernel", KERNEL]]]])
    xend.xend_domain_unpause(name)
    port = sxp.child_value(sxp.child(info, "console"), "console_port")
    return int(sxp.child_value(info, "id")), int(port)


def echo_times(client: Console, count: int) -> list[float]:
    return [client.echo() for _ in range(count)]


def flooding(port: int, size: int, stop: threading.Event) -> threading.Thread:
    """A thread that floods the console on ``port`` until ``stop`` is set."""

    def run() -> None:
        with console(port) as client:
            while not stop.is_set():
                client.flood(size)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    settings = QUICK if parser.parse_args().quick else FULL
    size = settings.flood_bytes

    with running_xend() as home, XendClient(unix_path=home.unix_path) as xend:
        _, port_a = start_guest(xend, "relay-a")
        domid_b, _ = start_guest(xend, "plain-b")
        _, port_c = start_guest(xend, "flood-c")
        xend_floods: list[float] = []
        plain_floods: list[float] = []
        with plain_relay(home.simhv_socket, domid_b) as port_b, \
                console(port_a) as through_xend, console(port_b) as through_plain:
            print(f"{settings.rounds} rounds of a {size >> 20} MiB flood each way ...",
                  flush=True)
            for round_ in range(settings.rounds):  # paired rounds, each way first in turn
                if round_ % 2:
                    plain_floods.append(through_plain.flood(size))
                    xend_floods.append(through_xend.flood(size))
                else:
                    xend_floods.append(through_xend.flood(size))
                    plain_floods.append(through_plain.flood(size))
            xend_echo, plain_echo = [], []
            for _ in range(settings.echoes // 10):  # alternate in runs of ten
                xend_echo += echo_times(through_xend, 10)
                plain_echo += echo_times(through_plain, 10)
            stop = threading.Event()
            flooder = flooding(port_c, size, stop)
            try:
                busy_echo = echo_times(through_xend, settings.echoes)
            finally:
                stop.set()
                flooder.join(timeout=120)

    xend_rate = size / statistics.median(xend_floods) / 1e6
    plain_rate = size / statistics.median(plain_floods) / 1e6
    # The median of the paired rounds' ratios: a busy moment of the host slows both.
    ratio = statistics.median(p / x for x, p in zip(xend_floods, plain_floods, strict=True))

    def ms(times: list[float], fraction: float) -> str:
        return f"{1000 * percentile(times, fraction):.3f}"

    print()
    print(f"Guest console output through xend's relay and through a plain asyncio relay "
          f"(flood: median of {settings.rounds} paired rounds; {settings.echoes} echoes "
          f"each; {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}).")
    print()
    print_table(["path", "flood MB/s", "echo p50 ms", "echo p99 ms"], [
        ["plain asyncio relay (baseline)", f"{plain_rate:.0f}", ms(plain_echo, 0.5),
         ms(plain_echo, 0.99)],
        ["xend console relay", f"{xend_rate:.0f}", ms(xend_echo, 0.5), ms(xend_echo, 0.99)],
        ["xend relay, another console flooding", "", ms(busy_echo, 0.5),
         ms(busy_echo, 0.99)],
        ["xend / plain", f"{ratio:.2f}x (aim >= {AIM})",
         f"{percentile(xend_echo, 0.5) / percentile(plain_echo, 0.5):.2f}x",
         f"{percentile(xend_echo, 0.99) / percentile(plain_echo, 0.99):.2f}x"],
    ])


if __name__ == "__main__":
    main()
