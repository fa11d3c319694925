"""One HTTP connection: h11's protocol over a socket, its requests handed to a WSGI app.

The protocol is h11's (framing, keep-alive, chunking): h11 reads each request (a new
one for each after the first) and ``http_reply`` writes each reply by h11's rules,
without its state machine. The I/O is ours, in two halves.
``advance`` never blocks: it takes what bytes the socket has (and, under TLS, runs the
handshake step by step) and says what it waits for: more bytes (``Step.READ``/``WRITE``,
the server loop's selector waits for them), a whole request head to answer
(``Step.REQUEST``), or nothing more (``Step.CLOSE``). ``respond`` runs the app on the
caller's thread (a worker's) and writes the reply, blocking, within ``SEND_STALL``.

A request must come at the client's pace: every wait for its bytes counts against a
budget of ``xend-read-timeout`` seconds plus one for every ``MIN_RATE`` bytes received,
or it gets a 408 (slowloris). The wait on a kept-alive connection for the first byte of
a next request is idle time, not the request's (``deadline``, ``expire``). A body up to
``BUFFERED`` bytes with a length is read the same way before the app runs; a larger or
chunked one is read by the app as it comes (``_Body``, the same budget, blocking). A
reply to a request whose body was not all read is followed by the close.

A Unix peer's uid is in the environ for the gate (``PEER_UID``); the socket is under
``werkzeug.socket`` for a WebSocket to take over (``websocket.py``): such a connection
never comes back (``respond`` says close). A 503 (xend past one of its bounds) closes
the connection too: the client is to go away, not to wait on it. HTTP/1.0 requests are
answered and closed (h11 keeps only HTTP/1.1 connections alive), as the original Xen 2.0
``xm`` expects.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Hashable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import h11
from werkzeug.exceptions import RequestTimeout

from xend_actors import sxp
from xend_actors.web import http_reply
from xend_actors.web.admission import peer_uid, refuse
from xend_actors.web.gate import PEER_UID

log = logging.getLogger(__name__)

MIN_RATE = 32 * 1024  # bytes a second a client sends its request at, after its grace
SEND_STALL = 30.0  # seconds a client may take to take what is sent to it
BUFFERED = (1 << 20) + (64 << 10)  # a body read before the app runs: the app's limit
MAX_HEAD = 64 * 1024  # a request's line and headers (http.server's line limit)
MAX_HEADERS = 100  # header lines in a request (http.server's)
CHUNK = 64 * 1024
HANDSHAKE_TIMEOUT = 5.0  # seconds a client has to finish its TLS handshake
SERVER_SOFTWARE = "xend-actors"
_TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte a TLS client sends
_PLAIN_REFUSAL = "xend speaks HTTPS on this port: use an https:// URL"
_NO_HOST = "Missing mandatory Host: header"  # h11's words
_READER = "xend.reader"  # the environ's key of the request's pace (a _Pace)


class Step(enum.Enum):
    READ = "read"  # waits for bytes from the client
    WRITE = "write"  # waits to send (a TLS handshake's flight)
    REQUEST = "request"  # a request to answer: ``environ``, then ``respond``
    CLOSE = "close"  # done: the caller closes it


class _Phase(enum.Enum):
    HANDSHAKE = "handshake"  # TLS, before its handshake is done
    FIRST = "first"  # waiting for the first request: the wait is the request's
    IDLE = "idle"  # kept alive, waiting for a next request: the wait is idle time
    HEAD = "head"  # a request's bytes are coming


class _TooSlow(TimeoutError, RequestTimeout):
    """The client did not send its request in time: a timeout to the socket's readers,
    a 408 to the app (which answers HTTP errors with their code)."""

    description = "the request came too slowly; xend stopped waiting for it"
    response = None  # HTTPException's, whose __init__ OSError's stands in for


class _Pace:
    """A request's time budget: ``grace`` seconds of waiting for its bytes, plus one for
    every ``MIN_RATE`` bytes received; the time xend takes between reads is not counted."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.received = 0
        self.waited = 0.0
        self.timed_out = False

    def left(self) -> float:
        return self.grace + self.received / MIN_RATE - self.waited


class HttpConnection:
    """One client's connection; used by one thread at a time (the loop's or a worker's)."""

    def __init__(self, sock: socket.socket, address: Any, client: Hashable, *,
                 tls: ssl.SSLContext | None, read_timeout: float,
                 server: tuple[str, int]) -> None:
        self.sock = sock
        self.fd = sock.fileno()  # the same under TLS, whose socket replaces this one
        self.client = client
        self.read_timeout = read_timeout
        self._tls = tls
        self._address = address if address else ("<local>", 0)
        self._server = server
        self._accepted = time.monotonic()
        self._parked = self._accepted
        self._phase = _Phase.HANDSHAKE if tls is not None else _Phase.FIRST
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._pace = _Pace(read_timeout)
        self._head = bytearray()  # the head's bytes as they came (to MAX_HEAD + 1)
        self._unfed = True  # h11 has no bytes of this cycle: no event before some come
        self._hostless = False  # the request came without a Host; h11 was given one
        self._request: h11.Request | None = None
        self._body: list[bytes] | None = None  # read before the app runs
        self._peer_uid: int | None = None
        self._constant: WSGIEnvironment | None = None  # ``_connection_environ``
        if sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                self._peer_uid = peer_uid(sock)
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # A reply's head and body, and a handshake's flights, are small writes one
            # after the other: Nagle would hold each back for the client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # --- the waits: the loop's selector -----------------------------------------------

    def park(self, now: float) -> None:
        """The loop's selector now waits for this connection."""
        self._parked = now

    def unpark(self, now: float) -> None:
        if self._phase in (_Phase.FIRST, _Phase.HEAD):
            self._pace.waited += now - self._parked

    def deadline(self, keepalive: float) -> float:
        """When the selector stops waiting for it (``expire``)."""
        if self._phase is _Phase.HANDSHAKE:
            return self._accepted + HANDSHAKE_TIMEOUT
        if self._phase is _Phase.IDLE:
            return self._parked + keepalive
        return self._parked + max(self._pace.left(), 0.0)

    def expire(self) -> None:
        """Its wait is over: a request that came too slowly is answered 408, an idle
        connection or an unfinished handshake closed."""
        if self._phase is _Phase.HANDSHAKE:
            log.info("TLS handshake with %s failed: not done within %g s",
                     self._address[0], HANDSHAKE_TIMEOUT)
        elif self._phase is not _Phase.IDLE:
            log.info("%s: %s", self._address[0], _TooSlow.description)
            refuse(self.sock, _TooSlow.description, speak=True,
                   status="408 Request Timeout")
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # --- reading a request, never blocking --------------------------------------------

    def advance(self, readable: bool = True) -> Step:
        """Read what has come, and say what is next; ``readable`` false: the socket is
        not known to have bytes (a reply was just sent), so it is read only if TLS holds
        some already (a plain socket's bytes wake the loop's selector at once)."""
        try:
            if self._phase is _Phase.HANDSHAKE:
                step = self._handshake()
                if step is not None:
                    return step
            return self._read_request(readable)
        except h11.RemoteProtocolError as error:
            if self._host_supplied(error):
                return self.advance(readable=False)
            self._refuse_malformed(error)
            return Step.CLOSE
        except OSError as error:
            log.debug("%s: connection lost: %s", self._address[0], error)
            return Step.CLOSE

    def _handshake(self) -> Step | None:
        """One step of the TLS handshake; None once it is done."""
        if not isinstance(self.sock, ssl.SSLSocket):
            assert self._tls is not None
            try:
                first = self.sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return Step.READ
            if first != _TLS_HANDSHAKE_RECORD:
                if first:
                    refuse(self.sock, _PLAIN_REFUSAL, speak=True,
                           status=f"400 {_PLAIN_REFUSAL}")
                return Step.CLOSE
            self.sock = self._tls.wrap_socket(self.sock, server_side=True,
                                              do_handshake_on_connect=False)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return Step.READ
        except ssl.SSLWantWriteError:
            return Step.WRITE
        except (ssl.SSLError, OSError) as error:
            log.info("TLS handshake with %s failed: %s", self._address[0], error)
            return Step.CLOSE
        self._phase = _Phase.FIRST
        self._pace = _Pace(self.read_timeout)
        self._parked = time.monotonic()
        return None

    def _read_request(self, readable: bool) -> Step:
        if self._unfed:  # h11 would only say NEED_DATA: not asked until bytes come
            if not (readable or _pending(self.sock)) or not self._receive():
                return Step.READ
            readable = True
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                if not (readable or _pending(self.sock)) or not self._receive():
                    return Step.READ
                readable = True
                continue
            if isinstance(event, h11.Request):
                refusal = _too_large(event)
                if refusal is not None:
                    self._refuse(*refusal)
                    return Step.CLOSE
                self._request = event
                if not self._buffers(event):
                    return Step.REQUEST
                self._body = []
                if self._h11.client_is_waiting_for_100_continue:
                    self.send_all(self._h11.send(h11.InformationalResponse(
                        status_code=100, headers=[])) or b"")
            elif isinstance(event, h11.Data):
                assert self._body is not None
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Step.REQUEST
            else:  # ConnectionClosed, or the end of a connection h11 will not keep
                return Step.CLOSE

    def _receive(self) -> bool:
        """Whether bytes came (or the end): False when there are none yet."""
        try:
            data = self.sock.recv(CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except ssl.SSLWantWriteError:  # a renegotiation TLS 1.3 does not have
            return False
        if data and self._phase is not _Phase.HEAD:
            if self._phase is _Phase.IDLE:
                self._pace = _Pace(self.read_timeout)  # the idle wait was not its
            self._phase = _Phase.HEAD
        self._pace.received += len(data)
        self._unfed = False
        if self._request is None and len(self._head) <= MAX_HEAD:
            self._head += data[:MAX_HEAD + 1 - len(self._head)]
        self._h11.receive_data(data)
        return True

    @staticmethod
    def _buffers(request: h11.Request) -> bool:
        """Whether its body is read before the app runs: a length, and a small one."""
        length = None
        for name, value in request.headers.raw_items():
            name = name.lower()
            if name == b"transfer-encoding":
                return False
            if name == b"content-length" and length is None:
                length = value
        return length is None or (length.isdigit() and int(length) <= BUFFERED)

    def _host_supplied(self, error: h11.RemoteProtocolError) -> bool:
        """Whether an HTTP/1.1 request h11 refused for want of a Host (RFC 9112 §3.2) is
        read again with an empty one (which the environ leaves out): werkzeug's server
        took such requests, and xend's clients may have come to rely on it."""
        if str(error) != _NO_HOST or self._hostless or self._request is not None or \
                len(self._head) > MAX_HEAD or (line_end := self._head.find(b"\n")) < 0:
            return False
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._h11.receive_data(bytes(self._head[:line_end + 1]) + b"Host: \r\n"
                               + bytes(self._head[line_end + 1:]))
        self._hostless = True
        return True

    def _refuse_malformed(self, error: h11.RemoteProtocolError) -> None:
        status = error.error_status_hint
        if self._request is None and b"\n" not in self._head[:MAX_HEAD + 1] and \
                len(self._head) > MAX_HEAD:
            status = 414  # the request line alone is past the limit: its URL
        reason = {400: "Bad Request", 414: "URI Too Long",
                  431: "Request Header Fields Too Large", 501: "Not Implemented"}
        self._refuse(status, reason.get(status, "Bad Request"), f"Bad request: {error}")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        log.info("%s: %d %s", self._address[0], status, message)
        refuse(self.sock, message, speak=True, status=f"{status} {reason}")

    # --- answering, on a worker -------------------------------------------------------

    def environ(self) -> WSGIEnvironment:
        """The WSGI environ of the request ``advance`` read (as werkzeug's server makes)."""
        assert self._request is not None
        request = self._request
        target = request.target.decode("latin-1")
        path, query, host = _split(target)
        body: io.RawIOBase | io.BytesIO
        body = io.BytesIO(b"".join(self._body)) if self._body is not None else _Body(self)
        environ = self._connection_environ().copy()
        environ.update({
            "wsgi.input": io.BufferedReader(body) if isinstance(body, _Body) else body,
            "REQUEST_METHOD": request.method.decode("latin-1"),
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": target,
            "RAW_URI": target,
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('latin-1')}",
            _READER: self._pace,
        })
        for raw_name, raw_value in request.headers.raw_items():
            name = raw_name.decode("latin-1")
            if "_" in name:
                continue  # as werkzeug: X_Token must not pass for X-Token
            key = name.upper().replace("-", "_")
            value = raw_value.decode("latin-1")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
                if key in environ:
                    value = f"{environ[key]},{value}"
            environ[key] = value
        if "HTTP_TRANSFER_ENCODING" in environ:
            environ["wsgi.input_terminated"] = True  # h11 has taken the chunking off
        if host:
            environ["HTTP_HOST"] = host
        if self._hostless and not environ.get("HTTP_HOST"):
            environ.pop("HTTP_HOST", None)
        return environ

    def _connection_environ(self) -> WSGIEnvironment:
        """What every request's environ on this connection holds alike, made once (its
        first request comes after any TLS handshake, which replaces the socket)."""
        if self._constant is None:
            self._constant = {
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "https" if self._tls is not None else "http",
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
                "werkzeug.socket": self.sock,
                "SERVER_SOFTWARE": SERVER_SOFTWARE,
                "SCRIPT_NAME": "",
                "REMOTE_ADDR": str(self._address[0]),
                "REMOTE_PORT": int(self._address[1]),
                "SERVER_NAME": self._server[0],
                "SERVER_PORT": str(self._server[1]),
            }
            if self._peer_uid is not None:
                self._constant[PEER_UID] = self._peer_uid
        return self._constant

    def respond(self, app: WSGIApplication, environ: WSGIEnvironment,
                keep: bool = True) -> bool:
        """Answer the request with ``app``; whether the connection may carry another
        (never after a WebSocket took it, nor when ``keep`` is false: xend stops)."""
        reply = _Reply(self)
        try:
            result = app(environ, reply.start_response)
            try:
                for data in result:
                    reply.write(data)
                keep = reply.finish() and keep
            finally:
                if hasattr(result, "close"):
                    result.close()
        except OSError as error:  # the client went, or a WebSocket took the connection
            log.debug("%s: connection ended: %s", self._address[0], error)
            return False
        except h11.LocalProtocolError as error:
            log.warning("%s %s: reply not sent: %s", environ["REQUEST_METHOD"],
                        environ["PATH_INFO"], error)
            return False
        if not reply.started:
            return False
        return keep and self._next_cycle()

    def _next_cycle(self) -> bool:
        """Ready for another request, if the request's body was all read (else what is
        left of it would be taken for the next): a new h11 reads it (the reply went past
        this one's state machine: ``http_reply``), from what came after this one."""
        if self._h11.their_state not in (h11.DONE, h11.MIGHT_SWITCH_PROTOCOL):
            return False  # (the latter: an Upgrade this reply did not take up)
        pipelined, ended = self._h11.trailing_data
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        if pipelined:
            self._h11.receive_data(pipelined)
        if ended:
            self._h11.receive_data(b"")  # (b"" is the end to h11)
        self._request, self._body, self._hostless = None, None, False
        self._head = bytearray(pipelined[:MAX_HEAD + 1])
        self._unfed = not (pipelined or ended)
        self._phase = _Phase.IDLE
        return True

    def send_all(self, data: bytes) -> None:
        """Send ``data`` on the non-blocking socket, waiting for room at most
        ``SEND_STALL`` seconds in all."""
        view = memoryview(data)
        deadline = 0.0
        while view:
            try:
                view = view[self.sock.send(view):]
                continue
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            now = time.monotonic()
            deadline = deadline or now + SEND_STALL
            if now >= deadline:
                raise TimeoutError(f"the client took nothing for {SEND_STALL:g} s")
            with selectors.DefaultSelector() as selector:
                selector.register(self.sock, selectors.EVENT_WRITE)
                selector.select(deadline - now)

    def read_body(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body, at the client's pace (blocking); b"" at its
        end. ``_TooSlow`` once its budget is spent."""
        if self._h11.client_is_waiting_for_100_continue:
            self.send_all(self._h11.send(h11.InformationalResponse(
                status_code=100, headers=[])) or b"")
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._receive_paced()
                continue
            if isinstance(event, h11.Data):
                return bytes(event.data)
            return b""  # EndOfMessage, or the connection closed

    def _receive_paced(self) -> None:
        left = self._pace.left()
        started = time.monotonic()
        try:
            self.sock.settimeout(max(left, 0.001))
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            self._pace.timed_out = True
            raise _TooSlow(f"no request within {self._pace.grace:g} s") from None
        finally:
            self._pace.waited += time.monotonic() - started
            self.sock.setblocking(False)
        self._pace.received += len(data)
        self._h11.receive_data(data)


def _pending(sock: socket.socket) -> int:
    """Bytes TLS has decrypted already: no selector sees them."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def _split(target: str) -> tuple[str, str, str]:
    """A request target's path, query and, in an absolute URL, host (as werkzeug's
    server reads it: a path starting ``//`` keeps its first segment)."""
    if target[:1] == "/" and target[1:2] != "/" and "#" not in target:
        path, _, query = target.partition("?")  # urlsplit's answer, for the usual target
        return path, query, ""
    url = urlsplit(target)
    path = f"/{url.netloc}{url.path}" if not url.scheme and url.netloc else url.path
    return path, url.query, url.netloc if url.scheme else ""


def _too_large(request: h11.Request) -> tuple[int, str, str] | None:
    """Why a request's head is refused though h11 took it whole (as http.server would)."""
    if len(request.target) > MAX_HEAD:
        return 414, "URI Too Long", "the URL is too long"
    if len(request.headers) > MAX_HEADERS:
        return 431, "Request Header Fields Too Large", "too many headers"
    # raw_items is a list: iterating the Headers sequence itself costs a call an item
    if any(len(name) + len(value) > MAX_HEAD for name, value in request.headers.raw_items()):
        return 431, "Request Header Fields Too Large", "a header line is too long"
    return None


class _Body(io.RawIOBase):
    """A request's body read by the app as it comes (``HttpConnection.read_body``)."""

    def __init__(self, connection: HttpConnection) -> None:
        super().__init__()
        self._connection = connection
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # io's own type: a writable buffer
        if not self._left:
            try:
                self._left = self._connection.read_body(len(buffer))
            except h11.RemoteProtocolError as error:
                raise OSError(f"bad request body: {error}") from None
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count


class _Reply:
    """A WSGI reply, written by h11's rules (``http_reply``): the head goes with the first
    bytes of the body (one segment for a small reply); without a length it is chunked
    (HTTP/1.1)."""

    def __init__(self, connection: HttpConnection) -> None:
        assert connection._request is not None
        self._connection = connection
        self._request = connection._request
        self._status: tuple[int, bytes] | None = None
        self._headers: list[tuple[str, str]] = []
        self._framing: http_reply.Framing | None = None
        self.started = False
        self.keep = False  # whether the connection carries another request after it

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        if exc_info and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        code, _, reason = status.partition(" ")
        self._status = (int(code), reason.encode("latin-1", "replace"))
        self._headers = headers
        if self._status[0] == 503:  # xend is past a bound: the client is to go, not wait
            self._headers = [*headers, ("Connection", "close")]
        return self.write

    def write(self, data: bytes) -> None:
        if not data and self.started:
            return
        head, framing = self._head()
        self._connection.send_all(head + framing.body(data))

    def finish(self) -> bool:
        """The reply's end sent; whether the connection may carry another request."""
        head, framing = self._head()
        self._connection.send_all(head + framing.end())
        return self.keep

    def _head(self) -> tuple[bytes, http_reply.Framing]:
        if self._framing is not None:
            return b"", self._framing
        if self._status is None:
            raise h11.LocalProtocolError("the app started no response")
        self.started = True
        code, reason = self._status
        head, self._framing, self.keep = http_reply.head(
            self._request, code, reason,
            [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self._headers])
        return head, self._framing


def timeouts_answered(app: WSGIApplication) -> WSGIApplication:
    """``app``, with a request whose body came too slowly answered 408 whatever ``app``
    made of it (werkzeug's form parser takes any error reading for a 400)."""

    def timed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reply = app(environ, start_response)
        pace = environ.get(_READER)
        if not isinstance(pace, _Pace) or not pace.timed_out:
            return reply
        if hasattr(reply, "close"):
            reply.close()
        body = sxp.show(["xend.err", _TooSlow.description]).encode()
        try:
            raise _TooSlow(_TooSlow.description)
        except _TooSlow:  # start_response may replace what app set only with exc_info
            start_response("408 Request Timeout", [
                ("Content-Type", sxp.MIME_TYPE), ("Content-Length", str(len(body))),
                ("Connection", "close")], sys.exc_info())
        return [body]

    return timed
