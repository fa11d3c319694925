"""A whole xend in a temporary folder: its config, its command and its clients.

Integration tests start real ``xend`` processes through the installed command, the
way a user does, each in its own short folder under /tmp (Unix socket paths are
limited to 108 bytes, so pytest's long tmp paths will not do).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from xend_actors import sxp

# httpx sends a User-Agent and "Accept: */*", which the original rule takes for a browser.
SXP_ACCEPT = {"Accept": "application/sxp"}


def free_port_base(span: int = 1, low: int = 20000, high: int = 30000) -> int:
    """A random free port range below the kernel's ephemeral range (32768 and up), so
    that no outgoing connection takes the port between this check and xend's bind."""
    while True:
        base = random.randrange(low, high - span)
        try:
            for port in range(base, base + span):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


def free_port() -> int:
    """A free port for a xend's HTTP or debug listener (apart from console ranges)."""
    return free_port_base(low=12000, high=20000)


def xend_command() -> list[str]:
    """The installed ``xend`` script beside this Python, else the module."""
    script = shutil.which("xend", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "xend_actors.cli"]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.05)


@dataclass
class XendHome:
    """One xend's folder: config, run dir, store and log, and ways to talk to it."""

    root: Path
    http_port: int = field(default_factory=free_port)
    event_port: int = field(default_factory=free_port)
    console_port_base: int = field(default_factory=lambda: free_port_base(span=32))
    extra: str = ""
    netns: str = ""  # run xend (and so its simhv) in this network namespace

    @property
    def config_file(self) -> Path:
        return self.root / "xend-config.sxp"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def unix_path(self) -> Path:
        return self.run_dir / "xend.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "xend.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "log" / "xend.log"

    @property
    def dbroot(self) -> Path:
        return self.root / "db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> None:
        # The first occurrence of an option wins, so a test's own settings go first.
        self.config_file.write_text(
            self.extra + "\n"
            f"(xend-port {self.http_port})\n"
            "(xend-address 127.0.0.1)\n"
            f"(xend-event-port {self.event_port})\n"
            f"(console-port-base {self.console_port_base})\n"
            "(console-address 127.0.0.1)\n"
            "(xend-unix-server yes)\n"
            f"(xend-unix-path {self.unix_path})\n"
            f"(xend-run-dir {self.run_dir})\n"
            f"(dbroot {self.dbroot})\n"
            f"(logfile {self.logfile})\n"
            "(loglevel DEBUG)\n"
            "(minimum-restart-time 20)\n"
            # No links on the host: vifs get no tap, and need no bridge.
            "(sim-taps no)\n"
            "(vif-bridge null)\n"
        )

    @property
    def simhv_socket(self) -> Path:
        return self.run_dir / "simhv.sock"

    def kill_simhv(self) -> None:
        """Stop the simulated hypervisor xend started here (it outlives xend on purpose)."""
        try:
            pid = int((self.run_dir / "simhv.pid").read_text())
        except (FileNotFoundError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def xend(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.run(
            [*netns, *xend_command(), "--config", str(self.config_file), *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=SXP_ACCEPT)

    def unix_http(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.unix_path))
        return httpx.Client(base_url="http://xend", transport=transport, timeout=30,
                            headers=SXP_ACCEPT)

    def get_sxp(self, path: str) -> sxp.Value:
        with self.http() as client:
            reply = client.get(path)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/sxp"
        return sxp.parse(reply.text)


def new_home(extra: str = "") -> XendHome:
    home = XendHome(Path(tempfile.mkdtemp(prefix="xend-")), extra=extra)
    home.write_config()
    return home


class Terminal:
    """A TCP client of a console port, reading with deadlines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seen = b""

    def close(self) -> None:
        self.sock.close()

    def read_until(self, *markers: bytes, timeout: float = 10.0) -> bytes:
        """Read until every marker has been seen, in order, since the last call."""
        deadline = time.monotonic() + timeout
        start = 0
        for marker in markers:
            while (at := self.seen.find(marker, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {marker!r} within {timeout:g} s in {self.seen!r}")
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError(f"console closed before {marker!r}: {self.seen!r}")
                self.seen += data
            start = at + len(marker)
        got, self.seen = self.seen[:start], self.seen[start:]
        return got

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r")

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the console closes the connection within ``timeout`` (output is read)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        return True


@contextlib.contextmanager
def terminal(port: int) -> Iterator[Terminal]:
    term = Terminal(port)
    try:
        yield term
    finally:
        term.close()


def netns_usable() -> str | None:
    """Why network namespaces can't be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


# A command typed on a sim guest's console, as a script to run inside a test's network
# namespace (``python -c SIM_SHELL PORT COMMAND``); it prints what the command answered.
SIM_SHELL = r"""
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.sendall(sys.argv[2].encode() + b"\r")
seen, deadline = b"", time.monotonic() + 10
marker = sys.argv[2].encode() + b"\r\n"
while not (marker in seen and seen.rsplit(marker, 1)[1].endswith(b"# ")):
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    seen += sock.recv(4096)
print(seen.rsplit(marker, 1)[1][:-2].decode().strip())
"""
