"""The control channel: xend's requests to the guest agent on virtio-serial.

The guest side is ``tests/guest/rootfs/sbin/xend-agent``: one line per request, one line
per answer. qemu serves the channel's Unix socket to one client at a time, so each
request connects, asks, and lets go. The agent greets a new client with ``ready``, but
not always (after a restore it may be waiting in a read), so a request first sends
``ping`` and skips whatever comes before the ``pong``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import BinaryIO

from xend_actors.errors import HypervisorError, Timeout

MAX_LINE = 4096


def request(path: Path, command: str, timeout: float = 5.0) -> str:
    """Send ``command`` (one line) to the agent behind ``path``; its answer line."""
    if "\n" in command or "\r" in command:
        raise ValueError(f"an agent command is one line, got {command!r}")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
            lines = sock.makefile("rb")
            sock.sendall(b"ping\n")
            while _line(lines, sock, deadline) != "pong":
                pass
            sock.sendall(command.encode() + b"\n")
            return _line(lines, sock, deadline)
        except TimeoutError:
            raise Timeout(f"the guest agent at {path} did not answer {command!r} within "
                          f"{timeout:g} s") from None
        except OSError as error:
            raise HypervisorError(f"cannot reach the guest agent at {path}: "
                                  f"{error.strerror or error}") from None


def _line(lines: BinaryIO, sock: socket.socket, deadline: float) -> str:
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    line = lines.readline(MAX_LINE)
    if not line:
        raise HypervisorError("the guest agent closed the control channel")
    return line.decode(errors="replace").strip()
