"""The WebServer actor: owns xend's HTTP listeners (TCP, the Unix socket, the read-only one).

Listeners are bound in ``__init__`` so that a port in use fails the start of xend with
a clear error instead of a dead actor. Every listener is a door with a gate
(``gate.py``) in front of the app. The Unix listeners tell the gate their peer's uid
(``SO_PEERCRED``). The admin socket is mode 0600 (root's), or 0660 and owned by
``xend-unix-group``; the read-only socket is 0666: it lets everyone look, nobody change.
The TCP listener speaks TLS when the config says so (``access/tls.py``).

The HTTP itself is ours, on h11 (werkzeug is the WSGI layer only): one selector thread
holds every listener and every connection waiting for its client
(``http_loop.ConnectionLoop``), a bounded pool of workers answers requests
(``workers.Workers``, ``xend-http-workers``), connections are kept alive between
requests (``xend-keepalive-timeout``), and each connection's protocol is
``http_connection.HttpConnection``. Connections are bounded over every door
(``admission.Admission``). Requests that wait by design (long-polls, event streams,
WebSockets: ``routes.lingers``) are answered on threads of their own, so they never
starve short ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from wsgiref.types import WSGIApplication, WSGIEnvironment

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.access.tls import check_exposure, listener_certificate, server_context
from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.trace import TracedActor
from xend_actors.web.admission import Admission
from xend_actors.web.gate import Door, Gate, Keys, group_id
from xend_actors.web.http_connection import timeouts_answered
from xend_actors.web.http_loop import ConnectionLoop, Limits, Listener
from xend_actors.web.workers import Workers

log = logging.getLogger(__name__)

STOP_WAIT = 5.0  # seconds a stop waits for the loop's thread (woken, it ends at once)
_UNIX_SERVER = ("xend", 80)  # the server name a Unix socket's environ tells


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
    """Serves ``app`` on the configured TCP address and, if enabled, the Unix sockets."""

    def __init__(self, config: XendConfig, app: WSGIApplication, keys: Keys,
                 lingers: Callable[[WSGIEnvironment], bool] = lambda environ: False) -> None:
        super().__init__()
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        try:
            host, port = config.http_address or "0.0.0.0", config.http_port
            tls = server_context(config)
            tcp = _bind(f"{host}:{port}", lambda: _bind_tcp(host, port))
            address = tcp.getsockname()
            self._add(tcp, Gate(app, Door.TCP, config, keys), tls, (address[0], address[1]))
            check_exposure(config, str(address[0]), tls is not None)
            if (certificate := listener_certificate(config)) is not None:
                log.info("TLS certificate %s, SHA-256 fingerprint %s", certificate.cert,
                         certificate.fingerprint())
            gid = group_id(config.unix_group) if config.unix_group else -1
            if config.unix_server:
                path = config.unix_path
                _socket_folder(path, config, 0o710 if gid != -1 else 0o700, gid)
                mode = 0o660 if gid != -1 else 0o600
                self._add(_bind(f"unix://{path}", lambda: _bind_unix(path, mode, gid)),
                          Gate(app, Door.UNIX, config, keys))
            if config.unix_ro_path is not None:
                ro_path = config.unix_ro_path
                _socket_folder(ro_path, config, 0o711)
                self._add(_bind(f"unix://{ro_path}", lambda: _bind_unix(ro_path, 0o666)),
                          Gate(app, Door.UNIX_RO, config, keys))
        except BaseException:
            self._close()
            raise
        admission = Admission(config.max_connections, config.max_client_connections)
        workers = Workers("http worker", config.http_workers, config.max_connections)
        limits = Limits(config.read_timeout, config.keepalive_timeout,
                        lingering=config.max_connections)
        self._loop = ConnectionLoop(self._listeners, admission, workers, limits, lingers)

    def _add(self, sock: socket.socket, app: WSGIApplication, tls: ssl.SSLContext | None = None,
             server: tuple[str, int] = _UNIX_SERVER) -> None:
        self._listeners.append(Listener(sock, timeouts_answered(app), tls, server))

    def on_start(self) -> None:
        self._thread = threading.Thread(target=self._loop.run, name="http loop", daemon=True)
        self._thread.start()
        for where in self.addresses():
            log.info("Serving HTTP on %s", where)

    def on_stop(self) -> None:
        self._loop.stop()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT)
        self._close()

    def addresses(self) -> list[str]:
        return [_where(listener) for listener in self._listeners]

    def _close(self) -> None:
        for listener in self._listeners:
            sock = listener.sock
            if sock.family == socket.AF_UNIX:
                path = sock.getsockname()
                if path and os.path.exists(path):
                    os.unlink(path)
            sock.close()
        self._listeners = []


def _where(listener: Listener) -> str:
    address = listener.sock.getsockname()
    if isinstance(address, tuple):
        scheme = "http" if listener.tls is None else "https"
        return f"{scheme}://{address[0]}:{address[1]}"
    return f"unix://{os.fsdecode(address)}"


def _bind(where: str, bind: Callable[[], socket.socket]) -> socket.socket:
    try:
        return bind()
    except OSError as error:
        raise XendError(f"cannot listen on {where}: {error.strerror or error}") from None


class WebServerProxy(ActorMemberMixin, pykka.ActorProxy[WebServer]):
    addresses = proxy_method(WebServer.addresses)
