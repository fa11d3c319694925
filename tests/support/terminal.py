"""A console's client, as a user at a terminal: reading with deadlines, typing lines."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

# --- consoles ----------------------------------------------------------------------------------


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
