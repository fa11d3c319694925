"""XendClient's HTTP: HTTP/1.1 requests to one xend on kept-alive connections.

xm is a short process that makes a request or two, so what its HTTP imports is most of
what it costs: httpx took 50 to 120 ms, and the standard library's ``http.client``
imports ``ssl`` and the ``email`` package at its top (some 20 ms of a command's 80 ms
budget, for every command, TLS or not; h11 as much again). So this module speaks the
small part of HTTP/1.1 a client of xend needs, over the socket module alone, and is
tested against xend and against hand-written replies (tests/unit/test_client_http.py):
a request line and headers, then a reply framed as RFC 9112 §6.3 says (none for
1xx/204/304 and HEAD, chunked, ``Content-Length``, or until the server closes), its
status line and headers bounded. TLS is the caller's ``ssl.SSLContext`` (already
verified or pinned), so ``ssl`` is imported only by a client that speaks TLS.

``Connections`` is a small pool to xend's Unix socket, or to TCP with or without TLS: a
connection goes back to the pool once its reply is read whole (unless the reply ends
the connection), and is dropped when xend has closed it meanwhile. Any failure to reach
xend or to read its reply is a ``TransportError`` whose ``__cause__``, if any, is the
original error. A request that finds its kept-alive connection closed by xend (its
``xend-keepalive-timeout``) before any reply goes once more on a new connection.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    import ssl

FORM = "application/x-www-form-urlencoded"
MAX_LINE = 64 * 1024  # a status, header or chunk-size line
MAX_HEADERS = 100  # header (or trailer) lines in one reply
_READ = 256 * 1024  # bytes asked of the socket at a time
# How a multipart field's name or filename is quoted (the HTML5 form encoding, as httpx).
_QUOTED = {ord('"'): "%22", ord("\\"): "\\\\", **{c: f"%{c:02X}" for c in range(0x20)}}
# Characters no request target or header value may hold (they would split the request).
_UNSAFE = frozenset(chr(c) for c in (*range(0x21), 0x7F)) - {" ", "\t"}


class TransportError(Exception):
    """xend could not be reached, or its reply not read; ``__cause__`` says why."""


class _ClosedWhileIdle(TransportError):
    """The connection ended before a byte of the reply: a kept-alive one xend closed."""


@dataclass(frozen=True)
class Reply:
    """A whole reply: status line, headers (by lower-case name) and body."""

    status_code: int
    reason_phrase: str
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        try:
            return self.content.decode(_charset(self.headers.get("content-type", "")),
                                       "replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", "replace")


@dataclass(frozen=True)
class Upload:
    """A file field of a multipart form."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


class _Connection:
    """One socket to xend, with what has been read from it but not yet used."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self._buffer = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def reusable(self) -> bool:
        """Whether it can carry another request: open, nothing unread, and xend has not
        closed it (or sent what nobody asked for) meanwhile."""
        if self.sock is None or self._buffer:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def _fill(self) -> bool:
        assert self.sock is not None
        data = self.sock.recv(_READ)
        self._buffer += data
        return bool(data)

    def readline(self) -> bytes:
        """One line with its end, at most ``MAX_LINE`` bytes; what is left at the end of
        the stream (b"" there)."""
        start = 0
        while (end := self._buffer.find(b"\n", start)) < 0:
            if len(self._buffer) > MAX_LINE:
                raise TransportError("a line of xend's reply is too long")
            start = len(self._buffer)
            if not self._fill():
                end = len(self._buffer) - 1
                break
        if end >= MAX_LINE:
            raise TransportError("a line of xend's reply is too long")
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line

    def pieces(self, size: int | None) -> Iterator[bytes]:
        """The next ``size`` bytes (all until the end of the stream if None), in pieces
        as they arrive."""
        while size is None or size > 0:
            if not self._buffer and not self._fill():
                if size is None:
                    return
                raise TransportError("xend's reply ended early")
            piece = bytes(self._buffer[:size]) if size is not None else bytes(self._buffer)
            del self._buffer[:len(piece)]
            if size is not None:
                size -= len(piece)
            yield piece

    def read(self, size: int) -> bytes:
        return b"".join(self.pieces(size))


class _Head:
    """A reply's status line and headers, and how its body is framed. (A plain class:
    a dataclass costs xm's start-up 0.5 ms to make, and this one never leaves here.)"""

    __slots__ = ("chunked", "headers", "keep_alive", "length", "reason_phrase",
                 "status_code")

    def __init__(self, status_code: int, reason_phrase: str, headers: dict[str, str],
                 length: int | None, chunked: bool, keep_alive: bool) -> None:
        self.status_code, self.reason_phrase, self.headers = status_code, reason_phrase, headers
        self.length = length  # None: chunked, or until the connection ends
        self.chunked, self.keep_alive = chunked, keep_alive


def _read_head(connection: _Connection, method: str) -> _Head:
    """The next final reply's head (a 1xx before it is skipped)."""
    interim = False
    while True:
        line = connection.readline()
        if not line:
            if interim:  # xend has seen the request
                raise TransportError("xend closed the connection")
            raise _ClosedWhileIdle("xend closed the connection")
        version, _, rest = line.rstrip(b"\r\n").decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise TransportError(f"xend's reply begins with {line[:80]!r}, not a status line")
        headers = _read_fields(connection)
        status = int(code)
        if not 100 <= status < 200:
            break
        interim = True
    keep_alive = version == "HTTP/1.1" and "close" not in _tokens(headers, "connection")
    coding = _tokens(headers, "transfer-encoding")
    if method == "HEAD" or status in (204, 304):
        return _Head(status, reason, headers, 0, False, keep_alive)
    if coding:
        chunked = coding[-1] == "chunked"
        return _Head(status, reason, headers, None, chunked, keep_alive and chunked)
    length = headers.get("content-length")
    if length is None:
        return _Head(status, reason, headers, None, False, False)
    if not length.isdigit():
        raise TransportError(f"xend's reply has a bad Content-Length: {length!r}")
    return _Head(status, reason, headers, int(length), False, keep_alive)


def _read_fields(connection: _Connection) -> dict[str, str]:
    """Header (or trailer) lines up to the empty line; a repeated name's values joined."""
    fields: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = connection.readline()
        if line in (b"\r\n", b"\n"):
            return fields
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not line.endswith(b"\n") or name != name.strip() or not name:
            raise TransportError(f"xend's reply has a bad header line {line[:80]!r}")
        key, value = name.lower(), value.strip()
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    raise TransportError(f"xend's reply has more than {MAX_HEADERS} header lines")


def _body(connection: _Connection, head: _Head) -> Iterator[bytes]:
    """The reply's body in pieces as they arrive, its framing taken off."""
    if not head.chunked:
        yield from connection.pieces(head.length)
        return
    while True:
        line = connection.readline()
        digits = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not digits or len(digits) > 16 \
                or digits.strip(b"0123456789abcdefABCDEF"):
            raise TransportError(f"xend's reply has a bad chunk size line {line[:80]!r}")
        size = int(digits, 16)
        if size == 0:
            _read_fields(connection)  # the trailers, unused
            return
        yield from connection.pieces(size)
        if connection.readline() not in (b"\r\n", b"\n"):
            raise TransportError("xend's reply has a chunk without its line end")


class Connections:
    """Kept-alive connections to one xend, shared safely between threads; each request
    takes one (or opens one) and gives it back when its reply has been read."""

    def __init__(self, *, unix_path: str | None = None, host: str = "", port: int = 0,
                 context: ssl.SSLContext | None = None, headers: Mapping[str, str],
                 timeout: float) -> None:
        self._unix_path, self._host, self._port = unix_path, host, port
        self._context = context
        self._timeout = timeout
        if unix_path is not None:
            where = "xend"  # the Host header xend sees
        else:
            where = f"[{host}]" if ":" in host else host
            if port != (443 if context is not None else 80):
                where += f":{port}"
        self._headers = {"Host": where, **headers}
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def _new(self) -> _Connection:
        if self._unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self._timeout)
                sock.connect(self._unix_path)
            except BaseException:
                sock.close()
                raise
            return _Connection(sock)
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            # A request goes in one write, and its reply is awaited: Nagle would only wait.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _open(self) -> _Connection:
        try:
            return self._new()
        except OSError as error:
            raise _transport(error) from error

    def _take(self) -> _Connection | None:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable():
                    return connection
                connection.close()
        return None

    def _give_back(self, connection: _Connection) -> None:
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
        message = self._message(method, path, params, data, files)
        kept = self._take()
        connection = kept or self._open()
        try:
            while True:
                try:
                    head = self._exchange(connection, message, method, timeout)
                    break
                except (_ClosedWhileIdle, BrokenPipeError, ConnectionResetError) as error:
                    connection.close()
                    if connection is not kept:
                        raise _transport(error) from error
                    # xend closed it idle (its keep-alive timeout) as the request went:
                    # it never saw the request, which goes again on a new connection.
                    connection = self._open()
            content = b"".join(_body(connection, head))
        except OSError as error:
            connection.close()
            raise _transport(error) from error
        except BaseException:
            connection.close()
            raise
        if head.keep_alive:
            if timeout is not None and connection.sock is not None:
                connection.sock.settimeout(self._timeout)
            self._give_back(connection)
        else:
            connection.close()
        return Reply(head.status_code, head.reason_phrase, head.headers, content)

    @contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None,
               timeout: float | None = None) -> Iterator[Streamed]:
        """A request whose reply is read as it comes, on a connection of its own."""
        message = self._message(method, path, params, None, None, headers)
        connection: _Connection | None = None
        try:
            connection = self._open()
            try:
                head = self._exchange(connection, message, method, timeout)
            except OSError as error:
                raise _transport(error) from error
            yield Streamed(head.status_code, _body(connection, head))
        finally:
            if connection is not None:
                connection.close()

    def _exchange(self, connection: _Connection, message: bytes, method: str,
                  timeout: float | None) -> _Head:
        """Send a request and read its reply's head."""
        assert connection.sock is not None
        if timeout is not None:
            connection.sock.settimeout(timeout)
        connection.sock.sendall(message)
        return _read_head(connection, method)

    def _message(self, method: str, path: str, params: Mapping[str, str] | None,
                 data: Mapping[str, str] | None, files: Mapping[str, Upload] | None,
                 extra: Mapping[str, str] | None = None) -> bytes:
        """The whole request: its line, headers and body."""
        if params:
            path += "?" + urlencode(params)
        headers = {**self._headers, **(extra or {})}
        body = b""
        if files:
            boundary = os.urandom(16).hex()
            body = multipart(boundary, data or {}, files)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif data is not None:
            body = urlencode(data).encode()
            headers["Content-Type"] = FORM
        if body or method in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        if any(c in _UNSAFE for c in path) or " " in path:
            raise TransportError(f"the request path {path!r} holds characters no URL may")
        lines = [f"{method} {path} HTTP/1.1"]
        for name, value in headers.items():
            if any(c in _UNSAFE for c in name + value) or ":" in name:
                raise TransportError(f"the {name} header holds characters no header may")
            lines.append(f"{name}: {value}")
        try:
            return "\r\n".join([*lines, "", ""]).encode("latin-1") + body
        except UnicodeEncodeError as error:
            raise TransportError(f"a header holds characters HTTP cannot carry: {error}") \
                from None


class Streamed:
    """A reply being read: its status, then its body line by line."""

    def __init__(self, status_code: int, pieces: Iterator[bytes]) -> None:
        self.status_code = status_code
        self._pieces = pieces

    def iter_lines(self) -> Iterator[str]:
        """Each line of the body without its line end, as it arrives."""
        rest = b""
        try:
            for piece in self._pieces:
                *lines, rest = (rest + piece).split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace").rstrip("\r")
        except OSError as error:
            raise _transport(error) from error
        if rest:
            yield rest.decode("utf-8", "replace").rstrip("\r")


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


def _transport(error: BaseException) -> TransportError:
    """The ``TransportError`` to raise from an error of the connection."""
    return TransportError(str(error) or type(error).__name__)


def _tokens(headers: Mapping[str, str], name: str) -> list[str]:
    """A comma-separated header's tokens, lower case."""
    return [token.strip().lower() for token in headers.get(name, "").split(",") if token.strip()]


def _charset(content_type: str) -> str:
    """The ``charset`` parameter of a Content-Type, UTF-8 when it has none."""
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip(' "'):
            return value.strip(' "')
    return "utf-8"
