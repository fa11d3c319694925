"""A console's client, as a user at a terminal: reading with deadlines, typing lines;
on the raw TCP console port (``terminal``) or the API's WebSocket (``ws_terminal``)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from wsproto import WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
)

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


# --- the console's WebSocket ------------------------------------------------------------------


class WsRefused(Exception):
    """The attach was answered with an HTTP status instead of the upgrade."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status, self.body = status, body


class WsTerminal:
    """A WebSocket client of ``/xend/console/<port>/attach`` on a connected socket (the
    admin Unix socket, or TCP), reading with deadlines like ``Terminal``."""

    def __init__(self, sock: socket.socket, port: int, headers: dict[str, str] | None = None,
                 host: str = "xend") -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.seen = b""
        self.close_code: int | None = None
        extra = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        self.sock.sendall(self.ws.send(Request(host=host, target=f"/xend/console/{port}/attach",
                                               extra_headers=extra)))
        status, body = 0, b""
        while True:
            events = self._events(10.0)
            for at, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    self._take(events[at + 1:])  # what came with the upgrade
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise WsRefused(status, body)
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise WsRefused(status, body)

    def _events(self, timeout: float) -> list[object]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data and self.ws.state is ConnectionState.CONNECTING:
            raise AssertionError("xend closed the connection in the WebSocket handshake")
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        self.sock.close()

    def _pump(self, timeout: float) -> bool:
        """Read what comes within ``timeout``; False once the WebSocket is closed."""
        if self.close_code is not None:
            return False
        return self._take(self._events(timeout))

    def _take(self, events: list[object]) -> bool:
        for event in events:
            if isinstance(event, BytesMessage):
                self.seen += event.data
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                with contextlib.suppress(Exception):
                    self.sock.sendall(self.ws.send(event.response()))
                return False
        return True

    def read_until(self, *markers: bytes, timeout: float = 10.0) -> bytes:
        """Read until every marker has been seen, in order, since the last call."""
        deadline = time.monotonic() + timeout
        start = 0
        for marker in markers:
            while (at := self.seen.find(marker, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {marker!r} within {timeout:g} s in {self.seen!r}")
                if not self._pump(left) and self.seen.find(marker, start) < 0:
                    raise AssertionError(f"console closed before {marker!r}: {self.seen!r}")
            start = at + len(marker)
        got, self.seen = self.seen[:start], self.seen[start:]
        return got

    def type(self, line: str) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=line.encode() + b"\r")))

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether xend closes the WebSocket within ``timeout`` (output is read)."""
        deadline = time.monotonic() + timeout
        try:
            while self._pump(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return False
        except TimeoutError:
            return False
        return True


def unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


@contextlib.contextmanager
def ws_terminal(unix_path: Path, port: int,
                headers: dict[str, str] | None = None) -> Iterator[WsTerminal]:
    """A WebSocket terminal on console ``port`` over xend's Unix socket at ``unix_path``."""
    term = WsTerminal(unix_socket(unix_path), port, headers)
    try:
        yield term
    finally:
        term.close()
