"""The WebServer actor: owns xend's HTTP listeners (TCP, and the local Unix socket).

Each listener is a threaded werkzeug server whose loop runs on its own thread;
the actor owns their lifetimes. Listeners are bound in ``__init__`` so that a port
in use fails the start of xend with a clear error instead of a dead actor.
TCP clients are checked against ``xend-hosts-allow``; the Unix socket is root-only
(mode 0600 in a 0700 run dir), so whoever reaches it is trusted.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Sequence
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pykka
from pykka.typing import ActorMemberMixin, proxy_method
from werkzeug import Response
from werkzeug.serving import BaseWSGIServer, make_server

from xend_actors import sxp
from xend_actors.access.hosts import client_allowed
from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.trace import TracedActor
from xend_actors.web.negotiate import SXP_MIMETYPE

log = logging.getLogger(__name__)

# How often a server's loop looks for a stop: what a stop of xend waits for, at most.
SHUTDOWN_POLL = 0.05

def guard_hosts(app: WSGIApplication,
                patterns: Sequence[re.Pattern[str]]) -> WSGIApplication:
    """Wrap ``app`` so clients not allowed by ``patterns`` get 403."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        address = environ.get("REMOTE_ADDR", "")
        if client_allowed(address, patterns):
            return app(environ, start_response)
        message = f"client {address} is not allowed by xend-hosts-allow"
        response = Response(sxp.show(["xend.err", message]), mimetype=SXP_MIMETYPE)
        response.status = f"403 {message}"
        return response(environ, start_response)

    return guarded


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding here, not in werkzeug, because werkzeug's server
    calls ``sys.exit`` when the port is taken."""
    if host.startswith("unix://"):
        path = host.removeprefix("unix://")
        if os.path.exists(path):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(128)
        return listener
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


def _listen(host: str, port: int, app: WSGIApplication) -> BaseWSGIServer:
    where = host if host.startswith("unix://") else f"{host}:{port}"
    try:
        listener = _bind(host, port)
    except OSError as error:
        raise XendError(f"cannot listen on {where}: {error.strerror or error}") from None
    with listener:
        return make_server(host, port, app, threaded=True, fd=listener.fileno())


class WebServer(TracedActor):
    """Serves ``app`` on the configured TCP address and, if enabled, the Unix socket."""

    def __init__(self, config: XendConfig, app: WSGIApplication) -> None:
        super().__init__()
        self._servers: list[BaseWSGIServer] = []
        self._threads: list[threading.Thread] = []
        try:
            self._servers.append(
                _listen(config.http_address or "0.0.0.0", config.http_port,
                        guard_hosts(app, config.hosts_allow))
            )
            if config.unix_server:
                config.unix_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._servers.append(_listen(f"unix://{config.unix_path}", 0, app))
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
            return f"http://{os.fsdecode(host) if isinstance(host, bytes) else host}:{port}"
        return f"unix://{os.fsdecode(address)}"


class WebServerProxy(ActorMemberMixin, pykka.ActorProxy[WebServer]):
    addresses = proxy_method(WebServer.addresses)
