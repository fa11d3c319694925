"""What a benchmark reads of a process from /proc, and HTTP on xend's Unix socket.

It imports nothing of the project, so a benchmark's child that measures an older tree
under that tree's own Python (``scale.py``, ``read_speed.py``: ``--measure``) can use it.
"""

from __future__ import annotations

import http.client
import os
import socket
from pathlib import Path


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc/<pid>/status."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            figures[key] = int(value.split()[0])
    return figures


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 on xend's Unix socket, kept open between requests (http.client opens it
    again if the server closes it, as an older xend's does after each request)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)
