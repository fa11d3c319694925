"""Network namespaces the tests make: whether they can be made here, a thread of the test
inside one for a while, and a sim guest's shell reached from inside one."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# --- network namespaces ----------------------------------------------------------------------


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


@dataclass(frozen=True)
class Place:
    """Where a test's process runs and listens: a network namespace (None: the test's own)
    and an address in it."""

    ns: str | None
    address: str


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextmanager
def inside(ns: str | None) -> Iterator[None]:
    """This thread in network namespace ``ns`` meanwhile (None: where it is), so that the
    test reaches what listens in there; a socket made meanwhile stays in ``ns`` for life.
    Only this thread moves (setns is per thread), so the test's other threads do not."""
    if ns is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


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

