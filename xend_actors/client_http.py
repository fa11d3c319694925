"""XendClient's HTTP: requests to one xend on kept-alive ``http.client`` connections.

xm is a short process that makes a request or two, so its HTTP is the standard library's
``http.client``, not a full HTTP library: importing httpx was most of every xm command's
start-up (50 to 120 ms). ``Connections`` is a small pool
to xend's Unix socket, or to TCP with or without TLS (the caller's ``ssl.SSLContext``,
already verified or pinned): a connection goes back to the pool once its reply is read,
and is dropped when xend has closed it meanwhile. Any failure to reach xend or to read
its reply is a ``TransportError`` whose ``__cause__`` is the original error. A request
that finds its kept-alive connection closed by xend (its ``xend-keepalive-timeout``)
before any reply goes once more on a new connection.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlencode

FORM = "application/x-www-form-urlencoded"
# How a multipart field's name or filename is quoted (the HTML5 form encoding, as httpx).
_QUOTED = {ord('"'): "%22", ord("\\"): "\\\\", **{c: f"%{c:02X}" for c in range(0x20)}}


# How a kept-alive connection xend closed meanwhile fails a request, before any reply.
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class TransportError(Exception):
    """xend could not be reached, or its reply not read; ``__cause__`` says why."""


@dataclass(frozen=True)
class Reply:
    """A whole reply: status line, headers (case-insensitive ``get``) and body."""

    status_code: int
    reason_phrase: str
    headers: Message
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(self.headers.get_content_charset() or "utf-8", "replace")


@dataclass(frozen=True)
class Upload:
    """A file field of a multipart form."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("xend", timeout=timeout)  # the Host header xend sees
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Connections:
    """Kept-alive connections to one xend, shared safely between threads; each request
    takes one (or opens one) and gives it back when its reply has been read."""

    def __init__(self, *, unix_path: str | None = None, host: str = "", port: int = 0,
                 context: ssl.SSLContext | None = None, headers: Mapping[str, str],
                 timeout: float) -> None:
        self._unix_path, self._host, self._port = unix_path, host, port
        self._context = context
        self._headers = dict(headers)
        self._timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            return _UnixConnection(self._unix_path, self._timeout)
        if self._context is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                               context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.sock is None or not _closed_by_peer(connection.sock):
                    return connection
                connection.close()
        return self._new()

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                data: Mapping[str, str] | None = None,
                files: Mapping[str, Upload] | None = None,
                timeout: float | None = None) -> Reply:
        """Send one request and read its whole reply; ``data`` is a form (multipart when
        there are ``files``); ``timeout`` (s) replaces the client's for each read."""
        connection = self._take()
        for reused in (connection.sock is not None, False):
            try:
                reply = self._send(connection, method, path, params, data, files, timeout)
                content = reply.read()
                break
            except _CLOSED_WHILE_IDLE as error:
                connection.close()
                if not reused:
                    raise TransportError(str(error) or type(error).__name__) from error
                # xend closed it idle (its keep-alive timeout) as the request went: it
                # never saw the request, which goes again on a new connection.
                connection = self._new()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise TransportError(str(error) or type(error).__name__) from error
            except BaseException:
                connection.close()
                raise
        if timeout is not None and connection.sock is not None:
            connection.sock.settimeout(self._timeout)
        self._give_back(connection)
        return Reply(reply.status, reply.reason, reply.headers, content)

    @contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None,
               timeout: float | None = None) -> Iterator[Streamed]:
        """A request whose reply is read as it comes, on a connection of its own."""
        connection = self._new()
        try:
            try:
                reply = self._send(connection, method, path, params, None, None, timeout,
                                   headers)
            except (OSError, http.client.HTTPException) as error:
                raise TransportError(str(error) or type(error).__name__) from error
            yield Streamed(reply.status, reply)
        finally:
            connection.close()

    def _send(self, connection: http.client.HTTPConnection, method: str, path: str,
              params: Mapping[str, str] | None, data: Mapping[str, str] | None,
              files: Mapping[str, Upload] | None, timeout: float | None,
              extra: Mapping[str, str] | None = None) -> http.client.HTTPResponse:
        if params:
            path += "?" + urlencode(params)
        headers = {**self._headers, **(extra or {})}
        body = None
        if files:
            boundary = os.urandom(16).hex()
            body = multipart(boundary, data or {}, files)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif data is not None:
            body = urlencode(data).encode()
            headers["Content-Type"] = FORM
        if timeout is not None:
            if connection.sock is None:
                connection.connect()  # with the client's timeout
            assert connection.sock is not None
            connection.sock.settimeout(timeout)
        connection.request(method, path, body, headers)
        return connection.getresponse()


@dataclass(frozen=True)
class Streamed:
    """A reply being read: its status, then its body line by line."""

    status_code: int
    _reply: http.client.HTTPResponse

    def iter_lines(self) -> Iterator[str]:
        """Each line of the body without its line end, as it arrives."""
        try:
            for line in iter(self._reply.readline, b""):
                yield line.decode("utf-8", "replace").rstrip("\r\n")
        except (OSError, http.client.HTTPException) as error:
            raise TransportError(str(error) or type(error).__name__) from error


def multipart(boundary: str, fields: Mapping[str, str], files: Mapping[str, Upload]) -> bytes:
    """A ``multipart/form-data`` body: the fields, then the files."""
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
             .encode() + value.encode() + b"\r\n" for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
              f'filename="{_quote(upload.filename)}"\r\n'
              f"Content-Type: {upload.content_type}\r\n\r\n".encode()
              + upload.content + b"\r\n" for name, upload in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _quote(text: str) -> str:
    return text.translate(_QUOTED)


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection can be read from: xend closed it (or sent
    what nobody asked for), so it must not carry another request."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
