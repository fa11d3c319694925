"""The ``/xend/console`` resources: consoles, their info, disconnect, scrollback (facts §4.4).

A console is named by its port (its id everywhere, see ``console/info.py``).

``GET /xend/console/<port>/log?since=N&wait=S`` is ours: the console's output after
byte offset N (default 0) as ``application/octet-stream``, at most the last MiB.
Headers ``X-Console-First`` (the offset of the body's first byte: more than N when
output was dropped meanwhile), ``X-Console-Next`` (the N to ask next) and
``X-Console-Status``. With ``wait``, a request that finds nothing new waits up to S
seconds (at most ``MAX_WAIT``) for output: a long poll, so any number of read-only
viewers follow a console beside its one interactive client. A closed console's log
stays readable until its port is used again.

``GET /xend/console/<port>/attach`` (ours) is the console's terminal: a WebSocket whose
binary frames carry the console's bytes both ways (the upgrade: ``websocket.py``; the
frames: ``console/websocket.py``), for admins only, and never for a page of another
site (its ``Origin`` must be xend's own: a WebSocket is not bound by the same-origin
policy, so a page elsewhere could otherwise drive a console with whatever credentials
the browser sends along). The WebSocket is one more client of the console and follows
the original's rules: one client at a time (a second gets the refusal line, then the
close), and a new client first gets the output nobody saw. It lasts no longer than the
credential that opened it: deleting the token, or logging the session out, drops it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import ClassVar
from wsgiref.types import WSGIEnvironment

from werkzeug import Request, Response

from xend_actors.access.identity import principal_of
from xend_actors.console.info import Status
from xend_actors.errors import BadRequest, Conflict, Forbidden, Timeout, XendError
from xend_actors.web.csrf import cross_site_refusal
from xend_actors.web.forms import Kind, decode, optional
from xend_actors.web.resource import Answer, Resource, op
from xend_actors.web.services import ASK_TIMEOUT, Services, answer
from xend_actors.web.websocket import Upgrade, connection_socket, handshake, upgrades

log = logging.getLogger(__name__)

MAX_WAIT = 60
LOG_PARAMS = (optional("since", Kind.INT, 0), optional("wait", Kind.INT, 0))
_LOG_WAIT = re.compile(r"(?:^|&)wait=0*[1-9]")
_CONSOLE_PATH = re.compile(r"/xend/console/\d+/(log|attach)/?")


class ConsoleDirResource(Resource):
    """``/xend/console/``: the ports of the open consoles (their info with ``detail=1``)."""

    def __init__(self, services: Services) -> None:
        self.consoles = services.consoles

    def get(self, request: Request, **url_args: str) -> Answer:
        infos = answer(self.consoles.infos(), "the consoles")
        if request.args.get("detail", "0") not in ("0", ""):
            return list(infos)
        return [str(info.port) for info in infos]


class ConsoleResource(Resource):
    """``/xend/console/<port>``: one console's info; ``disconnect`` drops its client."""

    def __init__(self, services: Services) -> None:
        self.consoles = services.consoles

    def get(self, request: Request, port: int) -> Answer:
        return answer(self.consoles.info(port), "the consoles")

    @op("disconnect")
    def disconnect(self, request: Request, port: int) -> str:
        answer(self.consoles.disconnect(port), "the consoles")
        return "0"


class ConsoleLogResource(Resource):
    """``/xend/console/<port>/log``: the console's scrollback, read or followed."""

    def __init__(self, services: Services) -> None:
        self.consoles = services.consoles
        # Waiting requests hold a connection each: their own cap, below the connections'.
        self._most = services.config.max_waiting
        self._waiters = threading.BoundedSemaphore(self._most)

    def get(self, request: Request, port: int) -> Response:
        args = decode(LOG_PARAMS, request.args)
        since, wait = args["since"], args["wait"]
        assert isinstance(since, int) and isinstance(wait, int)
        if since < 0 or wait < 0:
            raise BadRequest("since and wait must not be negative")
        wait = min(wait, MAX_WAIT)
        if wait and not self._waiters.acquire(blocking=False):
            raise XendError(f"already {self._most} clients waiting for console output; "
                            "try again later", status=503)
        try:
            future = answer(self.consoles.read(port, since, wait), "the consoles")
            info, part = future.result(timeout=wait + ASK_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise Timeout(f"the console on port {port} did not answer") from None
        finally:
            if wait:
                self._waiters.release()
        headers = {"X-Console-First": str(part.first), "X-Console-Next": str(part.next),
                   "X-Console-Status": info.status.value}
        return Response(part.data, 200, headers, mimetype="application/octet-stream")


class ConsoleAttachResource(Resource):
    """``/xend/console/<port>/attach``: the console's terminal, over a WebSocket (admins)."""

    admin_only: ClassVar[bool] = True

    def __init__(self, services: Services) -> None:
        self.consoles = services.consoles
        # Which consoles each credential holds open: a deleted token or a logout drops them.
        self._held: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        if services.keys is not None:
            services.keys.revocations.listen(self._revoked)

    def _revoked(self, credential: str) -> None:
        with self._lock:
            ports = self._held.pop(credential, set())
        for port in ports:
            log.info("Console %s: dropping its client, whose %s has ended", port, credential)
            answer(self.consoles.disconnect(port), "the consoles")

    def _hold(self, credential: str, port: int) -> Callable[[], None]:
        """Note that ``credential`` holds ``port``; what to call when it lets go."""
        with self._lock:
            self._held.setdefault(credential, set()).add(port)

        def let_go() -> None:
            with self._lock:
                held = self._held.get(credential, set())
                held.discard(port)
                if not held:
                    self._held.pop(credential, None)

        return let_go

    def get(self, request: Request, port: int) -> Response:
        refusal = cross_site_refusal(request)
        if refusal:
            log.warning("Console %s: %s (a WebSocket from a page of another site)", port,
                        refusal)
            raise Forbidden(refusal)
        accept = handshake(request)
        wire = connection_socket(request)
        info = answer(self.consoles.info(port), "the consoles")
        if info.status is Status.CLOSED:
            raise Conflict(f"the console on port {port} is closed: its domain is gone")
        peer = (str(request.remote_addr or ""), int(request.environ.get("REMOTE_PORT") or 0))
        who = principal_of(request.environ)

        def hand_over(sock: socket.socket, on_end: Callable[[], None]) -> None:
            credential = who.credential if who is not None else ""
            if credential:
                let_go = self._hold(credential, port)
                on_end = _both(let_go, on_end)
            taken = answer(self.consoles.attach(port, sock, peer, on_end), "the consoles")
            log.info("Console %s: a WebSocket client %s from %s:%s%s", port,
                     who or "nobody known", *peer, "" if taken else ", refused: it has one")

        return Upgrade(accept, wire, hand_over)


def _both(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        first()
        then()
    return call


def waits(environ: WSGIEnvironment) -> bool:
    """Whether a request may wait by design: a log long-poll (``wait``) or a terminal
    (a WebSocket): the server answers it on a thread of its own, never a worker."""
    found = _CONSOLE_PATH.fullmatch(environ.get("PATH_INFO", ""))
    if found is None:
        return False
    if found.group(1) == "log":
        return _LOG_WAIT.search(environ.get("QUERY_STRING", "")) is not None
    return upgrades(environ)
