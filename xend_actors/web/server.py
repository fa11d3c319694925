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
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import WSGIApplication, WSGIEnvironment

import pykka
from pykka.typing import ActorMemberMixin, proxy_method
from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from xend_actors import sxp
from xend_actors.access.tls import check_exposure, listener_certificate, server_context
from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.trace import TracedActor
from xend_actors.web.gate import PEER_UID, Door, Gate, Keys, group_id

log = logging.getLogger(__name__)

# How often a server's loop looks for a stop: what a stop of xend waits for, at most.
SHUTDOWN_POLL = 0.05

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# How long a client has to finish its TLS handshake, from its connect.
HANDSHAKE_TIMEOUT = 5.0
_TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte a TLS client sends
_PLAIN_REFUSAL = "xend speaks HTTPS on this port: use an https:// URL"


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, telling the gate a Unix peer's uid."""

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        if self.connection.family == socket.AF_UNIX:
            creds = self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _PEERCRED.size)
            environ[PEER_UID] = _PEERCRED.unpack(creds)[1]
        return environ


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
    """werkzeug's threaded server; with ``tls``, each connection's handshake runs on the
    connection's own thread (``finish_request``), never in ``accept``."""

    def __init__(self, host: str, port: int, app: WSGIApplication, fd: int,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, app, _RequestHandler, fd=fd)
        # werkzeug's attribute: its handler reads the URL scheme (https) from it.
        self.ssl_context = tls

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
           app: WSGIApplication, tls: ssl.SSLContext | None = None) -> BaseWSGIServer:
    """A server on the socket ``bind`` makes; binding here, not in werkzeug, because
    werkzeug's server calls ``sys.exit`` when the port is taken."""
    try:
        listener = bind()
    except OSError as error:
        raise XendError(f"cannot listen on {where}: {error.strerror or error}") from None
    with listener:
        return _Server(host, port, app, listener.fileno(), tls)


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
        try:
            host, port = config.http_address or "0.0.0.0", config.http_port
            tls = server_context(config)
            tcp = _serve(f"{host}:{port}", lambda: _bind_tcp(host, port), host, port,
                         Gate(app, Door.TCP, config, keys), tls)
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
                    Gate(app, Door.UNIX, config, keys)))
            if config.unix_ro_path is not None:
                ro_path = config.unix_ro_path
                _socket_folder(ro_path, config, 0o711)
                self._servers.append(_serve(
                    f"unix://{ro_path}", lambda: _bind_unix(ro_path, 0o666),
                    f"unix://{ro_path}", 0, Gate(app, Door.UNIX_RO, config, keys)))
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
