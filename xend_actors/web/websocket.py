"""A WebSocket on a werkzeug server: the upgrade's check, and the hand-over of the
connection to whoever speaks WebSocket on it.

xend's one WebSocket is a console's terminal (``web/console.py``). ``handshake``
checks a request's upgrade headers (RFC 6455 §4.2.1) before anything else is done
for it, so a request without them gets a 400 like any bad request. ``Upgrade`` is
then the response: when werkzeug sends it, it writes the ``101`` straight onto the
connection's socket (``werkzeug.socket``) and hands the connection over (the console
frames and relays on the consoles' event loop, ``console/websocket.py``). The
request's thread waits until the WebSocket has ended, so that werkzeug reads nothing
more from it, then hands the connection back to werkzeug as a dropped one, which it
closes without a word (Flask-Sock does the same under werkzeug's server).

A connection under TLS cannot move to the event loop (its TLS session lives in this
thread's ``SSLSocket``), so for one the thread stays the TLS end: ``pump`` moves the
plain bytes between it and a socket pair whose other end is handed over, each way
read only as fast as the other takes it, so every buffer stays bounded.

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
import ssl
import threading
from collections.abc import Callable, Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug import Request, Response
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from xend_actors.errors import BadRequest, XendError

log = logging.getLogger(__name__)

VERSION = "13"
CHUNK = 64 * 1024  # read from either side at a time (TLS)
SEND_STALL = 30.0  # seconds the client may take to take what is sent to it (TLS)

HandOver = Callable[[socket.socket, Callable[[], None]], object]
"""Takes the upgraded connection (it owns it from then on) and a callable to call once
the WebSocket has ended; raises ``XendError`` if it cannot take it."""


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


def upgrades(environ: WSGIEnvironment) -> bool:
    """Whether a request asks for a WebSocket (whose connection is then never a plain
    HTTP one again)."""
    return _has_token(environ.get("HTTP_UPGRADE", ""), "websocket")


def connection_socket(request: Request) -> socket.socket:
    """The socket under ``request``, which a WebSocket takes over."""
    sock = request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        raise XendError("this server cannot hand over its connection for a WebSocket",
                        status=501)
    return sock


class Upgrade(Response):
    """The response that makes the connection ``wire`` a WebSocket and hands it over."""

    def __init__(self, accept: bytes, wire: socket.socket, hand_over: HandOver) -> None:
        super().__init__(status=101)
        self.accept, self.wire, self.hand_over = accept, wire, hand_over

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        ended = threading.Event()
        try:
            if self.wire.family in (socket.AF_INET, socket.AF_INET6):
                # Keystrokes and their echoes are small: each goes at once, as on the
                # console's own TCP port (asyncio sets TCP_NODELAY there).
                self.wire.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.wire.settimeout(SEND_STALL)
            self.wire.sendall(self.accept)
            if isinstance(self.wire, ssl.SSLSocket):
                ours, theirs = socket.socketpair()
                with ours:
                    self.hand_over(theirs, ended.set)
                    pump(self.wire, ours)
            else:
                self.hand_over(self.wire.dup(), ended.set)
            ended.wait()
        except XendError as error:  # the console went between the check and the upgrade
            with contextlib.suppress(OSError):
                self.wire.sendall(Connection(ConnectionType.SERVER).send(CloseConnection(
                    code=CloseReason.INTERNAL_ERROR, reason=error.message[:100])))
        except OSError as error:
            log.debug("WebSocket ended: %s", error)
        finally:
            with contextlib.suppress(OSError):
                self.wire.shutdown(socket.SHUT_RDWR)  # werkzeug reads its end and closes
        # werkzeug takes this for a dropped connection: it sends nothing more.
        raise ConnectionError("the WebSocket has ended")


def pump(wire: socket.socket, pipe: socket.socket) -> None:
    """Bytes both ways between ``wire`` (a TLS connection, blocking, with a timeout) and
    ``pipe`` until either ends: ``wire`` is read only once ``pipe`` has taken what came
    before, and ``pipe`` only as fast as ``wire`` takes it (within ``SEND_STALL``)."""
    pipe.setblocking(False)
    read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
    waiting = b""  # from the client, not yet taken by the pipe
    hearing = True  # whether the client is read
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, read)
        selector.register(wire, read)
        while True:
            # A TLS socket may hold decrypted bytes that select cannot see.
            pending = not waiting and _pending(wire) > 0
            ready = dict((key.fileobj, mask) for key, mask in
                         selector.select(0 if pending else None))
            from_pipe = ready.get(pipe, 0)
            if from_pipe & write:
                with contextlib.suppress(BlockingIOError):
                    waiting = waiting[pipe.send(waiting):]
            if from_pipe & read:
                try:
                    data = pipe.recv(CHUNK)
                except BlockingIOError:
                    data = None
                if data == b"":
                    return
                if data:
                    wire.sendall(data)
            if not waiting and (pending or wire in ready):
                data = wire.recv(CHUNK)
                if not data:
                    return
                with contextlib.suppress(BlockingIOError):
                    data = data[pipe.send(data):]
                waiting = data
            if hearing == bool(waiting):  # the client waits for the pipe, or no more
                hearing = not waiting
                selector.modify(pipe, read if hearing else read | write)
                if hearing:
                    selector.register(wire, read)
                else:
                    selector.unregister(wire)


def _pending(sock: socket.socket) -> int:
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
