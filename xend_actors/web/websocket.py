"""A WebSocket on a werkzeug server: the upgrade's check, and a bridge to a byte stream.

xend's one WebSocket is a console's terminal (``web/console.py``): binary frames carry
its bytes both ways, and nothing else is spoken. ``handshake`` checks a request's
upgrade headers (RFC 6455 §4.2.1) before anything else is done for it, so a request
without them gets a 400 like any bad request. ``Upgrade`` is then the response: when
werkzeug sends it, it writes the ``101`` straight onto the connection's socket
(``werkzeug.socket``), bridges that socket to a stream socket until either side ends,
and hands the connection back to werkzeug as a dropped one, which it closes without a
word (Flask-Sock does the same under werkzeug's server).

The bridge is one thread, the request's own, in a select loop; every buffer in it is
bounded, so memory and flow control are as the console relay's:

- the stream's bytes are read only as fast as the WebSocket takes them (a client that
  does not read stops the reading of the stream, and so of the guest);
- the client's frames are read only while the stream has taken what came before
  (a guest that does not read its input stops the reading of the client), and a
  message longer than ``MAX_MESSAGE`` ends the connection (1009);
- a client heard from for ``PING_AFTER`` seconds is pinged; one that answers nothing
  for ``GONE_AFTER`` seconds more, or takes ``SEND_STALL`` seconds to take a frame, is
  gone (a half-open connection), and the bridge ends.

No extension is accepted (no compression, so no inflation of a small frame into a
large one), and no subprotocol: the page and ``xm console`` speak bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug import Request, Response
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, generate_accept_token

from xend_actors.errors import BadRequest, XendError

log = logging.getLogger(__name__)

VERSION = "13"
CHUNK = 16 * 1024  # read from either side at a time
MAX_MESSAGE = 64 * 1024  # of one message from the client: keystrokes and pastes
PING_AFTER = 30.0  # seconds without a word from the client before it is pinged
GONE_AFTER = 30.0  # more seconds without an answer: the client is gone
SEND_STALL = 30.0  # seconds a frame may wait for the client to take it


def handshake(request: Request) -> bytes:
    """The ``101`` that accepts ``request``'s upgrade to a WebSocket; ``BadRequest`` if it
    is no such upgrade."""
    headers = request.headers
    if request.method != "GET" or request.environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        raise BadRequest("a WebSocket is opened by an HTTP/1.1 GET")
    if not (_has_token(headers.get("Upgrade", ""), "websocket")
            and _has_token(headers.get("Connection", ""), "upgrade")):
        raise BadRequest("this URL is a WebSocket: the request needs the upgrade headers "
                         "(Connection: Upgrade, Upgrade: websocket)")
    if headers.get("Sec-WebSocket-Version", "").strip() != VERSION:
        raise BadRequest(f"WebSocket version {VERSION} only (Sec-WebSocket-Version)")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (ValueError, binascii.Error):
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64") from None
    return (b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key.encode()) + b"\r\n\r\n")


def _has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value[:1000].split(","))


def connection_socket(request: Request) -> socket.socket:
    """The socket under ``request``, which a WebSocket takes over."""
    sock = request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        raise XendError("this server cannot hand over its connection for a WebSocket",
                        status=501)
    return sock


class Upgrade(Response):
    """The response that turns the connection into a WebSocket bridged to ``stream``;
    ``on_end`` is called once the bridge has ended, whoever ended it."""

    def __init__(self, accept: bytes, sock: socket.socket, stream: socket.socket,
                 on_end: Callable[[], None] = lambda: None) -> None:
        super().__init__(status=101)
        self.accept, self.wire, self.pipe, self.on_end = accept, sock, stream, on_end

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        try:
            self.wire.settimeout(SEND_STALL)
            self.wire.sendall(self.accept)
            Bridge(self.wire, self.pipe).run()
        except OSError as error:
            log.debug("WebSocket ended: %s", error)
        finally:
            self.pipe.close()
            with contextlib.suppress(OSError):
                self.wire.shutdown(socket.SHUT_RDWR)  # werkzeug reads its end and closes
            self.on_end()
        # werkzeug takes this for a dropped connection: it sends nothing more.
        raise ConnectionError("the WebSocket has ended")


class Bridge:
    """A WebSocket on ``sock`` (after the handshake) and the byte stream ``stream``."""

    def __init__(self, sock: socket.socket, stream: socket.socket) -> None:
        self.sock, self.stream = sock, stream
        self.ws = Connection(ConnectionType.SERVER)
        self.to_stream = b""  # from the client, not yet taken by the stream
        self.message = 0  # bytes of the client's message so far
        self.heard = time.monotonic()
        self.pinged = False

    def run(self) -> None:
        self.stream.setblocking(False)
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        with selectors.DefaultSelector() as selector:
            selector.register(self.stream, read)
            selector.register(self.sock, read)
            hearing = True  # whether the client is read
            while self.ws.state is ConnectionState.OPEN:
                if hearing == bool(self.to_stream):  # the client waits for the stream
                    hearing = not self.to_stream
                    selector.modify(self.stream, read if hearing else read | write)
                    if hearing:
                        selector.register(self.sock, read)
                    else:
                        selector.unregister(self.sock)
                # A TLS socket may hold decrypted bytes that select cannot see.
                pending = hearing and _pending(self.sock) > 0
                ready = dict((key.fileobj, mask) for key, mask in
                             selector.select(0 if pending else self._idle()))
                stream = ready.get(self.stream, 0)
                if stream & write:
                    self._feed_stream()
                if stream & read:
                    self._from_stream()
                if hearing and (pending or self.sock in ready) and \
                        self.ws.state is ConnectionState.OPEN:
                    self._from_client()
                self._keep_alive()

    def _idle(self) -> float:
        return max(0.0, self.heard + PING_AFTER + (GONE_AFTER if self.pinged else 0.0)
                   - time.monotonic())

    def _from_client(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            self.ws.receive_data(None)
            self._close(CloseReason.ABNORMAL_CLOSURE)
            return
        self.heard, self.pinged = time.monotonic(), False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, BytesMessage | TextMessage):
                part = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                self.message = 0 if event.message_finished else self.message + len(part)
                if self.message > MAX_MESSAGE:
                    self._close(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    return
                self.to_stream += part
            elif isinstance(event, Ping):
                self._send(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._close(event.code, event.reason or "")
                return
        if self.to_stream:
            self._feed_stream()

    def _feed_stream(self) -> None:
        try:
            sent = self.stream.send(self.to_stream)
        except BlockingIOError:
            return
        except OSError:  # the console dropped this client
            self._close(CloseReason.NORMAL_CLOSURE, "console closed")
            return
        self.to_stream = self.to_stream[sent:]

    def _from_stream(self) -> None:
        try:
            data = self.stream.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(CloseReason.NORMAL_CLOSURE, "console closed")
            return
        self._send(self.ws.send(BytesMessage(data=data)))

    def _keep_alive(self) -> None:
        if self.ws.state is not ConnectionState.OPEN or self._idle() > 0:
            return
        if self.pinged:
            log.info("WebSocket client silent for %g s: dropped", PING_AFTER + GONE_AFTER)
            self._close(CloseReason.GOING_AWAY, "no answer")
            return
        self.pinged = True
        self._send(self.ws.send(Ping(payload=b"xend")))

    def _close(self, code: int, reason: str = "") -> None:
        """Answer or send a close frame, if one may still be sent; the loop then ends."""
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            with contextlib.suppress(OSError, LocalProtocolError):
                # 1005 and 1006 are never sent: they say no code came.
                sendable = code not in (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE)
                self._send(self.ws.send(CloseConnection(
                    code=code if sendable else CloseReason.NORMAL_CLOSURE, reason=reason)))
        if self.ws.state is ConnectionState.OPEN:
            self.ws.receive_data(None)  # nothing more is read

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)  # within SEND_STALL, or a timeout ends the bridge


def _pending(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return pending() if callable(pending) else 0
