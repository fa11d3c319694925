"""Real guests under qemu for the e2e tests: the test guest, a xend with the qemu driver,
and a client of a guest's console.

The guest is what ``tests/guest/build`` makes (a Debian cloud kernel and a busybox
initramfs with a shell on ttyS0 and the control agent). Under TCG on 2 cores a boot takes
~4 s, so guests are few and every wait is a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.home import XendHome
from tests.support.processes import process_gone
from tests.support.xend import Xend
from xend_actors import sxp

ROOT = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-system-x86_64")
PROMPT = b"]# "
BOOT_TIMEOUT = 90.0  # a TCG boot takes ~4 s alone; the suite may share the cpus
MEMORY = "128"  # this kernel needs at least 80 MiB
QEMU_CONFIG = "(hypervisor qemu)\n(qemu-accel tcg)\n"

__all__ = ["BOOT_TIMEOUT", "MEMORY", "PROMPT", "QEMU", "QEMU_CONFIG", "ROOT", "Console", "Guest",
           "QemuXend", "booted", "build_guest", "console", "process_gone", "vm"]


@dataclass(frozen=True)
class Guest:
    kernel: str
    ramdisk: str


def build_guest() -> Guest:
    """The test guest, built (or found in its cache) by tests/guest/build."""
    build = ROOT / "tests" / "guest" / "build"
    done = subprocess.run([sys.executable, str(build), "--quiet"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"tests/guest/build failed: {done.stderr}"
    paths = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    return Guest(paths["kernel"], paths["ramdisk"])


def vm(guest: Guest, name: str, *extra: sxp.Value, kernel: str | None = None,
       args: str = "") -> sxp.Value:
    return ["vm", ["name", name], ["memory", MEMORY],
            ["image", ["linux", ["kernel", kernel or guest.kernel], ["ramdisk", guest.ramdisk],
                       ["args", f"quiet loglevel=3 {args}".strip()]]], *extra]


# --- a xend running qemu ---------------------------------------------------------------------


class QemuXend(Xend):
    """One xend with the qemu driver."""

    def __init__(self, home: XendHome, guest: Guest) -> None:
        super().__init__(home)
        self.guest = guest

    def create_vm(self, name: str, *extra: sxp.Value, start: bool = True,
                  args: str = "") -> sxp.Value:
        """Create the test guest as ``name`` (unpaused unless ``start`` is false); its info."""
        return self.create(vm(self.guest, name, *extra, args=args), unpause=start)

    def do(self, dom: str | int, op: str, **fields: str) -> None:
        """POST ``op`` to ``dom``, which must succeed (200 or 202)."""
        reply = self.op(dom, op, **fields)
        assert reply.status_code in (200, 202), reply.text

    def wait_event(self, line: str, timeout: float = 30.0) -> None:
        self.events.wait_line(line, timeout=timeout)

    def qemu_pid(self, domid: int | str) -> int:
        return int(json.loads(self.state_file(domid).read_text())["pid"])

    def state_file(self, domid: int | str) -> Path:
        return self.home.run_dir / "qemu" / str(domid) / "state.json"

    def log_since(self, offset: int) -> str:
        """The log after byte ``offset`` (all of it if it was rotated meanwhile)."""
        text = self.home.logfile.read_bytes()
        return text[offset if offset <= len(text) else 0:].decode(errors="replace")

    def log_size(self) -> int:
        return self.home.logfile.stat().st_size


# --- a console client ---------------------------------------------------------------------------


class Console:
    """A TCP client of a console port, reading with deadlines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seen = b""

    def close(self) -> None:
        self.sock.close()

    def expect(self, pattern: bytes, timeout: float = 30.0) -> re.Match[bytes]:
        """Read until ``pattern`` (a regex) matches what came since the last match."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout:g} s; the console said "
                                     f"{self.seen[-2000:]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"the console closed before {pattern!r}: "
                                     f"{self.seen[-2000:]!r}")
            self.seen += data
        self.seen = self.seen[match.end():]
        return match

    def silent(self, pattern: bytes, seconds: float) -> bool:
        """Whether ``pattern`` does NOT show up within ``seconds``."""
        try:
            self.expect(pattern, seconds)
        except AssertionError:
            return True
        return False

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def run(self, command: str, answer: bytes, timeout: float = 30.0) -> re.Match[bytes]:
        """Type ``command`` and wait for ``answer``, a regex the echo of the line cannot
        match (write the command so that only its output does)."""
        self.type(command)
        return self.expect(answer, timeout)

    def uptime(self) -> float:
        match = self.run("echo UP-$(cut -d' ' -f1 /proc/uptime)-", rb"UP-([0-9.]+)-")
        return float(match.group(1))


@contextlib.contextmanager
def console(port: int) -> Iterator[Console]:
    client = Console(port)
    try:
        yield client
    finally:
        client.close()


def booted(con: Console) -> float:
    """Wait for the guest's prompt; seconds it took."""
    began = time.monotonic()
    con.expect(rb"GUEST-UP", BOOT_TIMEOUT)
    con.expect(re.escape(PROMPT), BOOT_TIMEOUT)
    return time.monotonic() - began

