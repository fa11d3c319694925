"""The WebServer actor: owns xend's HTTP listeners (TCP, the Unix socket, the read-only one).

Each listener is a threaded werkzeug server whose loop runs on its own thread;
the actor owns their lifetimes. Listeners are bound in ``__init__`` so that a port
in use fails the start of xend with a clear error instead of a dead actor.
Every listener is a door with a gate (``gate.py``) in front of the app. The Unix
listeners tell the gate their peer's uid (``SO_PEERCRED``). The admin socket is
mode 0600 (root's), or 0660 and owned by ``xend-unix-group``; the read-only socket
is 0666: it lets everyone look, nobody change.

The TCP listener speaks TLS when the config says so (``access/tls.py``). werkzeug would
wrap the listening socket, so that each handshake ran inside ``accept`` on the server's
one thread, where a client that never finishes it would stall every other; here the
listener stays plain and each connection's handshake runs on that connection's own
thread, with a deadline. A plain HTTP request to the TLS port gets a 400 that says so.

Connections are bounded (``Admission``): at most ``xend-max-connections`` open at once
over every door, ``xend-max-client-connections`` from one client (an address, or a
uid on a Unix socket), and none while fewer than ``FD_RESERVE`` descriptors are free,
which xend keeps for its own work (the store, notify deliveries, consoles). A
connection past a cap is answered a 503 on the accepting thread without waiting for
anything (closed unanswered under TLS, whose handshake it does not wait for); one
within them has a thread of its own, so the caps bound the threads too. A client must
send its request at its own pace (``_PacedReader``): ``xend-read-timeout`` seconds of
waiting, plus one for every ``MIN_RATE`` bytes, or it gets a 408 and is dropped. After
its reply a connection is closed at once, read or not: werkzeug would read on until
the client stopped sending. After a burst, the heap is handed back (``memory.trim``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import resource
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pykka
from pykka.typing import ActorMemberMixin, proxy_method
from werkzeug.exceptions import RequestTimeout
from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from xend_actors import sxp
from xend_actors.access.tls import check_exposure, listener_certificate, server_context
from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.trace import TracedActor
from xend_actors.web import memory
from xend_actors.web.gate import PEER_UID, Door, Gate, Keys, group_id

log = logging.getLogger(__name__)

# How often a server's loop looks for a stop: what a stop of xend waits for, at most.
SHUTDOWN_POLL = 0.05

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# How long a client has to finish its TLS handshake, from its connect.
HANDSHAKE_TIMEOUT = 5.0
_TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte a TLS client sends
_PLAIN_REFUSAL = "xend speaks HTTPS on this port: use an https:// URL"

FD_RESERVE = 64  # descriptors no connection may take: xend's own work needs them
_READER = "xend.reader"  # the environ's key of the request's _PacedReader
MIN_RATE = 32 * 1024  # bytes a second a client sends its request at, after its grace
SEND_STALL = 30.0  # seconds a client may take to take what is sent to it
REFUSALS_REPORTED = 10.0  # seconds between reports of refused connections
TRIM_INTERVAL = 2.0  # seconds between heap trims, while connections come and go


class _TooSlow(TimeoutError, RequestTimeout):
    """The client did not send its request in time: a timeout to the socket's readers,
    a 408 to the app (which answers HTTP errors with their code)."""

    description = "the request came too slowly; xend stopped waiting for it"
    response = None  # HTTPException's, whose __init__ OSError's stands in for


class _PacedReader(io.RawIOBase):
    """A connection's incoming bytes, for as long as the client keeps pace: every wait
    for them counts against a budget of ``grace`` seconds plus one for each ``MIN_RATE``
    bytes received, so a slow sender (slowloris) is dropped however it spreads its
    bytes, and the time xend itself takes between reads is never the client's."""

    def __init__(self, connection: socket.socket, grace: float) -> None:
        super().__init__()
        self._connection = connection
        self._grace = grace
        self._received = 0
        self._waited = 0.0
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # io's own type: a writable buffer
        left = self._grace + self._received / MIN_RATE - self._waited
        started = time.monotonic()
        try:
            self._connection.settimeout(max(left, 0.001))
            count = self._connection.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise _TooSlow(f"no request within {self._grace:g} s") from None
        finally:
            self._waited += time.monotonic() - started
            self._connection.settimeout(SEND_STALL)
        self._received += count
        return count


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, telling the gate a Unix peer's uid, reading the request at
    the client's pace, and never reading on after the reply."""

    server: _Server
    timeout = SEND_STALL  # until the first read: the socket's timeout, as after each

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # werkzeug's own reader: replaced, unused
        self.reader = _PacedReader(self.connection, self.server.read_timeout)
        self.rfile = io.BufferedReader(self.reader)
        self.dispatched = False

    def handle_one_request(self) -> None:
        super().handle_one_request()
        if self.reader.timed_out and not self.dispatched:  # in the headers: ours to say
            body = sxp.show(["xend.err", _TooSlow.description]).encode()
            with contextlib.suppress(OSError):
                self.connection.settimeout(1.0)
                self.connection.sendall(
                    f"HTTP/1.0 408 Request Timeout\r\nContent-Type: {sxp.MIME_TYPE}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                    .encode() + body)

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()  # its wsgi.input: the paced reader
        environ[_READER] = self.reader
        self.dispatched = True
        # What werkzeug reads after the reply, to drain the request (until the client
        # stops sending): nothing. The connection is closed instead.
        self.rfile = io.BytesIO()
        if self.connection.family == socket.AF_UNIX:
            environ[PEER_UID] = _peer_uid(self.connection)
        return environ

    def finish(self) -> None:
        super().finish()
        self.reader.close()

    def log_error(self, format: str, *args: Any) -> None:
        if self.reader.timed_out:  # a slow client is no error of xend's
            log.info("%s: %s", self.address_string(), format % args)
        else:
            super().log_error(format, *args)


def _timeouts_answered(app: WSGIApplication) -> WSGIApplication:
    """``app``, with a request whose body came too slowly answered 408 whatever ``app``
    made of it (werkzeug's form parser takes any error reading for a 400)."""

    def timed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reply = app(environ, start_response)
        if not environ[_READER].timed_out:
            return reply
        if hasattr(reply, "close"):
            reply.close()
        body = sxp.show(["xend.err", _TooSlow.description]).encode()
        try:
            raise _TooSlow(_TooSlow.description)
        except _TooSlow:  # start_response may replace what app set only with exc_info
            start_response("408 Request Timeout", [
                ("Content-Type", sxp.MIME_TYPE), ("Content-Length", str(len(body)))],
                sys.exc_info())
        return [body]

    return timed


def _peer_uid(connection: socket.socket) -> int:
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


class Admission:
    """Which connections may be served, shared by every door: the caps, the fd reserve,
    and the heap trim after connections have come and gone."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open: Counter[Hashable] = Counter()
        self._count = 0
        self._closed_since_trim = False
        self._trim_again = True  # the next trim is followed by one more, an interval later
        self._last_trim = time.monotonic()
        self._refused = 0  # since the last report (only the accepting threads count)
        self._reported = -REFUSALS_REPORTED

    def admit(self, client: Hashable) -> str | None:
        """Why the client's new connection is refused, or None once it is counted."""
        refusal = self._refusal(client)
        if refusal is not None:
            self._refused += 1
            if (now := time.monotonic()) - self._reported >= REFUSALS_REPORTED:
                # A flood of refusals is one line a while, not one each.
                log.warning("%d connection(s) refused since the last report, the latest "
                            "from %s: %s", self._refused, client, refusal)
                self._refused, self._reported = 0, now
        return refusal

    def _refusal(self, client: Hashable) -> str | None:
        if _free_fds() < FD_RESERVE:
            return "xend is short of file descriptors; try again later"
        with self._lock:
            if self._count >= self.total:
                return f"xend has {self.total} connections open already; try again later"
            if self._open[client] >= self.per_client:
                return (f"this client has {self.per_client} connections open already; "
                        "close one or try again later")
            self._count += 1
            self._open[client] += 1
        return None

    def release(self, client: Hashable) -> None:
        with self._lock:
            self._count -= 1
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]
            self._closed_since_trim = self._trim_again = True

    def tick(self) -> None:
        """Trims the heap now and then while connections close (a server loop's poll), and
        once more an interval after the last close: a finished request's thread frees its
        memory a little after its connection is released."""
        now = time.monotonic()
        with self._lock:
            if not self._closed_since_trim or now - self._last_trim < TRIM_INTERVAL:
                return
            self._closed_since_trim = self._trim_again
            self._trim_again = not self._trim_again
            self._last_trim = now
        memory.trim()


def _free_fds() -> int:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return FD_RESERVE
    try:
        return limit - len(os.listdir("/proc/self/fd"))
    except OSError:  # EMFILE: none free at all
        return 0


def _client_of(connection: socket.socket, address: Any) -> Hashable:
    """Whom the per-client cap counts a connection against: its address, or on a Unix
    socket its user."""
    if connection.family == socket.AF_UNIX:
        return ("uid", _peer_uid(connection))
    return ("ip", address[0])


def _refuse(connection: socket.socket, reason: str, speak: bool) -> None:
    """Answer a connection past a cap with a 503, never waiting on it: what the client
    sent so far is read, so that the close sends the reply and a FIN, not a reset."""
    with contextlib.suppress(OSError):
        connection.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            connection.recv(64 * 1024)
        if speak:
            body = sxp.show(["xend.err", reason]).encode()
            connection.send(
                f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: {sxp.MIME_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                .encode() + body)
        connection.shutdown(socket.SHUT_WR)
    connection.close()


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """A socket file is made with the umask's mode: closed from its first moment."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _bind_unix(path: Path, mode: int, gid: int = -1) -> socket.socket:
    if path.is_socket():
        path.unlink()  # one a xend before us left; never another kind of file
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _umask(0o177):
            listener.bind(str(path))
        os.chown(path, -1, gid)
        os.chmod(path, mode)
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server, a thread for each connection ``admission`` admits;
    with ``tls``, each connection's handshake runs on the connection's own thread
    (``finish_request``), never in ``accept``."""

    def __init__(self, host: str, port: int, app: WSGIApplication, fd: int,
                 tls: ssl.SSLContext | None, admission: Admission,
                 read_timeout: float) -> None:
        super().__init__(host, port, _timeouts_answered(app), _RequestHandler, fd=fd)
        # werkzeug's attribute: its handler reads the URL scheme (https) from it.
        self.ssl_context = tls
        self.admission = admission
        self.read_timeout = read_timeout

    def process_request(self, request: socket.socket,  # type: ignore[override]
                        client_address: Any) -> None:
        try:
            client = _client_of(request, client_address)
        except OSError:  # gone already
            request.close()
            return
        refusal = self.admission.admit(client)
        if refusal is not None:
            _refuse(request, refusal, speak=self.ssl_context is None)
            return
        try:
            threading.Thread(target=self._connection, args=(request, client_address, client),
                             name="http connection", daemon=True).start()
        except BaseException:
            self.admission.release(client)
            self.shutdown_request(request)
            raise

    def _connection(self, request: socket.socket, client_address: Any,
                    client: Hashable) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.admission.release(client)

    def service_actions(self) -> None:
        super().service_actions()
        self.admission.tick()

    def finish_request(self, request: socket.socket | tuple[bytes, socket.socket],
                       client_address: Any) -> None:  # socketserver's own types
        if self.ssl_context is None or not isinstance(request, socket.socket):
            super().finish_request(request, client_address)
            return
        secure = _handshake(request, self.ssl_context, client_address[0])
        if secure is None:
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            # The plain socket the caller shuts down was detached by the wrapping.
            self.shutdown_request(secure)


def _handshake(connection: socket.socket, context: ssl.SSLContext,
               client: str) -> ssl.SSLSocket | None:
    """The connection with TLS on, or None (the client told why, if it spoke plain
    HTTP) when its handshake did not finish within ``HANDSHAKE_TIMEOUT`` of now."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    connection.settimeout(HANDSHAKE_TIMEOUT)
    # The handshake's flights, its session tickets and each reply's header and body are
    # small writes one after the other: Nagle would hold each back for the client's
    # delayed ACK (10 to 40 ms a request).
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    secure = None
    try:
        first = connection.recv(1, socket.MSG_PEEK)
        if first != _TLS_HANDSHAKE_RECORD:
            if first:
                _refuse_plain(connection)
            return None
        connection.settimeout(max(deadline - time.monotonic(), 0.001))
        secure = context.wrap_socket(connection, server_side=True,
                                     do_handshake_on_connect=False)
        secure.do_handshake()
        secure.settimeout(None)
        return secure
    except OSError as error:  # ssl.SSLError and TimeoutError among them
        log.info("TLS handshake with %s failed: %s", client, error)
        if secure is not None:
            secure.close()
        return None


def _refuse_plain(connection: socket.socket) -> None:
    """Answer a plain HTTP request on the TLS port with a 400 that says why."""
    body = sxp.show(["xend.err", _PLAIN_REFUSAL]).encode()
    connection.recv(64 * 1024)  # the request's start, so the close sends no reset first
    connection.sendall(
        f"HTTP/1.0 400 {_PLAIN_REFUSAL}\r\nContent-Type: {sxp.MIME_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def _serve(where: str, bind: Callable[[], socket.socket], host: str, port: int,
           app: WSGIApplication, admission: Admission, config: XendConfig,
           tls: ssl.SSLContext | None = None) -> BaseWSGIServer:
    """A server on the socket ``bind`` makes; binding here, not in werkzeug, because
    werkzeug's server calls ``sys.exit`` when the port is taken."""
    try:
        listener = bind()
    except OSError as error:
        raise XendError(f"cannot listen on {where}: {error.strerror or error}") from None
    with listener:
        return _Server(host, port, app, listener.fileno(), tls, admission,
                       config.read_timeout)


def _socket_folder(path: Path, config: XendConfig, mode: int, gid: int = -1) -> None:
    """Make the folder of a socket for whom it is for: members of ``xend-unix-group`` (0710)
    or everyone (0711, to pass through, not to list). Only the run dir or a folder made
    here is changed; every other file in it keeps its own mode."""
    folder = path.parent
    made = not folder.exists()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (made or folder == config.run_dir) and mode != 0o700:
        os.chown(folder, -1, gid)
        os.chmod(folder, mode)


class WebServer(TracedActor):
    """Serves ``app`` on the configured TCP address and, if enabled, the Unix socket."""

    def __init__(self, config: XendConfig, app: WSGIApplication, keys: Keys) -> None:
        super().__init__()
        self._servers: list[BaseWSGIServer] = []
        self._threads: list[threading.Thread] = []
        admission = Admission(config.max_connections, config.max_client_connections)
        try:
            host, port = config.http_address or "0.0.0.0", config.http_port
            tls = server_context(config)
            tcp = _serve(f"{host}:{port}", lambda: _bind_tcp(host, port), host, port,
                         Gate(app, Door.TCP, config, keys), admission, config, tls)
            self._servers.append(tcp)
            check_exposure(config, str(tcp.server_address[0]), tls is not None)
            if (certificate := listener_certificate(config)) is not None:
                log.info("TLS certificate %s, SHA-256 fingerprint %s", certificate.cert,
                         certificate.fingerprint())
            gid = group_id(config.unix_group) if config.unix_group else -1
            if config.unix_server:
                path = config.unix_path
                _socket_folder(path, config, 0o710 if gid != -1 else 0o700, gid)
                mode = 0o660 if gid != -1 else 0o600
                self._servers.append(_serve(
                    f"unix://{path}", lambda: _bind_unix(path, mode, gid), f"unix://{path}", 0,
                    Gate(app, Door.UNIX, config, keys), admission, config))
            if config.unix_ro_path is not None:
                ro_path = config.unix_ro_path
                _socket_folder(ro_path, config, 0o711)
                self._servers.append(_serve(
                    f"unix://{ro_path}", lambda: _bind_unix(ro_path, 0o666),
                    f"unix://{ro_path}", 0, Gate(app, Door.UNIX_RO, config, keys),
                    admission, config))
        except BaseException:
            self._close()
            raise

    def on_start(self) -> None:
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, args=(SHUTDOWN_POLL,),
                name=f"http {self._where(server)}", daemon=True)
            thread.start()
            self._threads.append(thread)
            log.info("Serving HTTP on %s", self._where(server))

    def on_stop(self) -> None:
        for server in self._servers:
            server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)
        self._close()

    def addresses(self) -> list[str]:
        return [self._where(server) for server in self._servers]

    def _close(self) -> None:
        for server in self._servers:
            server.server_close()
            if server.address_family == socket.AF_UNIX:
                path = str(server.server_address)
                if os.path.exists(path):
                    os.unlink(path)
        self._servers = []

    @staticmethod
    def _where(server: BaseWSGIServer) -> str:
        address = server.server_address
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            host = os.fsdecode(host) if isinstance(host, bytes) else host
            scheme = "http" if server.ssl_context is None else "https"
            return f"{scheme}://{host}:{port}"
        return f"unix://{os.fsdecode(address)}"


class WebServerProxy(ActorMemberMixin, pykka.ActorProxy[WebServer]):
    addresses = proxy_method(WebServer.addresses)
