"""The debug port (facts §11.3): xend's events out, SXP requests in, over a Unix socket
(and TCP if asked).

``DebugServer`` owns the listeners (bound in ``__init__``, so a port in use fails
xend's start) and their clients, at most ``MAX_CLIENTS``. Its one door by default is
the Unix socket ``<xend-run-dir>/debug.sock``, mode 0600 in the 0700 run dir; beside the
file's mode, each client's uid is read with ``SO_PEERCRED`` and only root (and the
user xend runs as, when not root) is served: anyone else gets one refusal line and is
closed. With ``(xend-debug-tcp yes)`` it also listens on
``xend-address``:``xend-event-port`` for the clients ``xend-hosts-allow`` admits; there
the ops of ``requests.ROOT_ONLY`` (``exit``, tracing and logging switches, event
injection, console disconnects) are refused: they need root on the socket. Root's
socket serves every op.

Each client is subscribed to ``*`` on connect and has two threads: a reader that
parses and serves its requests, and a writer that sends replies and events, in order,
from a bounded queue, so the event bus never waits on a slow client; one that falls
``MAX_QUEUED`` messages behind is disconnected.

The line protocol (requests and replies) is ``requests.py``'s.

Decided against the original:

* every request received is served (the original took one per read), and a bad
  one gets an error reply: nothing is raised inside xend;
* the protocol is one of lines, as xend.tex describes it: a line holds one or more
  whole requests (the original read an SXP stream, so a form could span lines).
  After bad SXP, the line gets an error reply and the rest of it is skipped; a
  line longer than ``MAX_REQUEST`` bytes gets one error reply and is skipped. The
  connection stays usable either way;
* the port is a root-only socket (the original's TCP port let any local user stop
  xend with ``(exit)``); TCP is optional and serves only the harmless ops;
* a console's id is its port, as over HTTP (facts §15 item 14).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import logs, sxp, trace
from xend_actors.access.hosts import client_allowed
from xend_actors.actors import ask
from xend_actors.config import XendConfig
from xend_actors.console.hub import ConsolesProxy
from xend_actors.debug.requests import (
    ROOT_ONLY,
    RequestReader,
    error_sxpr,
    normalize,
    on_off,
    reply,
)
from xend_actors.errors import BadRequest, Forbidden, XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.events.event import Event
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
MAX_CLIENTS = 16
MAX_QUEUED = 1000  # replies and events waiting for a client before it is dropped
FLUSH_TIMEOUT = 5.0  # for a closing client's last replies to go out
RECV_SIZE = 4096
REFUSE_TIMEOUT = 1.0  # for the one line a refused client is sent
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


# --- one client -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What a client's requests may reach."""

    events: EventBusProxy
    consoles: ConsolesProxy | None
    trace_file: Path
    shutdown: Callable[[], None]
    socket: Path  # root's door, named when a TCP client is refused an op


@dataclass(frozen=True)
class _Peer:
    """Who a client is: where it is (for the log) and whether it is root on the socket."""

    where: str
    root: bool


Handler = Callable[["_Client", list[sxp.Value]], sxp.Value | None]
_OPS: dict[str, Handler] = {}


def _op(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _OPS[name] = handler
        return handler

    return register


class _Client:
    """One connection: its reader and writer threads, its subscription, its ops."""

    def __init__(self, sock: socket.socket, peer: _Peer, context: _Context,
                 forget: Callable[[_Client], None]) -> None:
        self.peer = peer
        self.where = peer.where
        self._sock = sock
        self._context = context
        self._forget = forget
        self._reader = RequestReader()
        self._out: queue.Queue[Event | sxp.Value | None] = queue.Queue(MAX_QUEUED)
        self._pretty = True
        self._done = False  # quit or exit: stop reading
        self._exit = False
        self._dropped = False
        self.thread = threading.Thread(target=self._serve, name=f"debug {self.where}",
                                       daemon=True)
        self._writer = threading.Thread(target=self._write, name=f"debug {self.where} out",
                                        daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Disconnect now; both threads see it and end."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def tell(self, message: Event) -> None:
        """An event from the bus (the bus's thread): queued, never waited for."""
        self._send(message)

    def _send(self, item: Event | sxp.Value) -> None:
        """Queue a reply or an event for the writer; a client too far behind is dropped."""
        try:
            self._out.put_nowait(item)
        except queue.Full:
            if not self._dropped:
                self._dropped = True
                log.warning("Debug client %s fell %d messages behind; disconnected",
                            self.where, MAX_QUEUED)
            self.close()

    # --- reader thread ---

    def _serve(self) -> None:
        self._writer.start()
        try:
            ask(self._context.events.subscribe(self, "*"), "the event bus", ASK_TIMEOUT)
            while not self._done:
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    break
                for request in self._reader.feed(data):
                    self._serve_one(request)
                    if self._done:
                        break
        except OSError as error:
            log.debug("Debug client %s: %s", self.where, error)
        except (XendError, pykka.ActorDeadError) as error:
            log.warning("Debug client %s dropped: %s", self.where, error)
        finally:
            with contextlib.suppress(XendError, pykka.ActorDeadError):
                ask(self._context.events.unsubscribe(self), "the event bus", ASK_TIMEOUT)
            self._flush_and_close()
            self._forget(self)
        if self._exit:
            log.info("Exit requested on the debug port by %s", self.where)
            self._context.shutdown()

    def _serve_one(self, request: sxp.Value | BadRequest) -> None:
        try:
            if isinstance(request, BadRequest):
                raise request
            form = normalize(request)
            handler = _OPS.get(str(form[0]))
            if handler is None:
                raise BadRequest(f"unknown op {form[0]}; (help) lists the ops")
            if form[0] in ROOT_ONLY and not self.peer.root:
                raise Forbidden(f"{form[0]} needs root over the debug socket "
                                f"{self._context.socket}; it is refused over TCP")
            result = handler(self, form)
        except XendError as error:
            self._send(error_sxpr(error))
        except Exception as error:
            log.exception("Debug port request %s failed", sxp.show(request))
            self._send(error_sxpr(error))
        else:
            if form[0] != "quit":  # quit just closes, as in the original
                self._send(reply(result))

    def _flush_and_close(self) -> None:
        if self._writer.is_alive():
            with contextlib.suppress(queue.Full):
                self._out.put(None, timeout=FLUSH_TIMEOUT)
            self._writer.join(FLUSH_TIMEOUT)
        self.close()  # wakes a writer stuck on a client that does not read
        self._writer.join(FLUSH_TIMEOUT)
        self._sock.close()

    # --- writer thread ---

    def _write(self) -> None:
        try:
            while (item := self._out.get()) is not None:
                value = item.sxpr() if isinstance(item, Event) else item
                text = sxp.pretty(value) if self._pretty else sxp.show(value) + "\n"
                self._sock.sendall(text.encode())
        except OSError as error:
            log.debug("Debug client %s: %s", self.where, error)
        finally:
            self.close()

    # --- ops (facts §11.3); each returns the result of (ok RESULT), or None for (ok) ---

    @_op("help")
    def _help(self, form: list[sxp.Value]) -> sxp.Value:
        return sorted(_OPS)

    @_op("quit")
    def _quit(self, form: list[sxp.Value]) -> None:
        self._done = True

    @_op("exit")
    def _exit_xend(self, form: list[sxp.Value]) -> None:
        self._done = self._exit = True

    @_op("pretty")
    def _set_pretty(self, form: list[sxp.Value]) -> None:
        self._pretty = len(form) == 1 or on_off(form)

    @_op("info")
    def _info(self, form: list[sxp.Value]) -> sxp.Value:
        consoles = self._context.consoles
        infos = [] if consoles is None else ask(consoles.infos(), "the consoles", ASK_TIMEOUT)
        return ["info", *(info.sxpr() for info in infos)]

    @_op("console.disconnect")
    def _console_disconnect(self, form: list[sxp.Value]) -> None:
        port = sxp.child_value(form, "id")
        if port is None:
            raise BadRequest("Missing console id")
        if not isinstance(port, str) or not port.isdigit():
            raise BadRequest(f"console id: expected a number, got {sxp.show(port)}")
        if self._context.consoles is None:
            raise XendError("consoles are not available in this xend yet")
        ask(self._context.consoles.disconnect(int(port)), "the consoles", ASK_TIMEOUT)

    @_op("sys.subscribe")
    def _subscribe(self, form: list[sxp.Value]) -> None:
        patterns = [pattern for pattern in form[1:] if isinstance(pattern, str)]
        if len(patterns) != len(form) - 1:
            raise BadRequest("expected (sys.subscribe PATTERN ...), e.g. xend.domain.*")
        ask(self._context.events.subscribe(self, *patterns), "the event bus", ASK_TIMEOUT)

    @_op("sys.inject")
    def _inject(self, form: list[sxp.Value]) -> None:
        event = form[1] if len(form) == 2 else None
        if not isinstance(event, list) or not event or not isinstance(event[0], str):
            raise BadRequest("expected (sys.inject (NAME ...))")
        self._context.events.publish(event[0], event)

    @_op("sys.modules")
    def _modules(self, form: list[sxp.Value]) -> sxp.Value:
        # What xend has imported: what it loads lazily shows here once used.
        return sorted(sys.modules.copy())

    @_op("trace")
    def _trace(self, form: list[sxp.Value]) -> None:
        if on_off(form):
            trace.start(self._context.trace_file)
        else:
            trace.stop()

    @_op("log.stderr")
    def _log_stderr(self, form: list[sxp.Value]) -> None:
        logs.set_stderr(on_off(form))

    @_op("debug.msg")
    def _debug_msg(self, form: list[sxp.Value]) -> None:
        trace.switches.messages = on_off(form)

    @_op("debug.controller")
    def _debug_controller(self, form: list[sxp.Value]) -> None:
        trace.switches.controllers = on_off(form)


# --- the server -----------------------------------------------------------------------


class DebugServer(TracedActor):
    """Serves the debug port on ``config.debug_socket`` and, with ``xend-debug-tcp``, on
    ``xend-address``:``xend-event-port``.

    ``shutdown`` stops xend; it is called for ``(exit)`` once the reply is sent.
    ``consoles`` is the Consoles actor, if xend has one.
    """

    def __init__(self, config: XendConfig, events: EventBusProxy,
                 shutdown: Callable[[], None], consoles: ConsolesProxy | None = None) -> None:
        super().__init__()
        self._path = config.debug_socket
        self._hosts_allow = config.hosts_allow
        self._trusted = {0, os.geteuid()}  # root, and whoever runs an unprivileged xend
        self._listeners = [_bind_unix(self._path)]
        if config.debug_tcp:
            try:
                self._listeners.append(_bind_tcp(config.http_address or "0.0.0.0",
                                                 config.event_port))
            except BaseException:
                self._close()
                raise
        self._context = _Context(events, consoles, config.trace_file, shutdown, self._path)
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()  # the accept threads and the clients' threads share it
        self._stopping = threading.Event()
        self._acceptors = [threading.Thread(target=self._accept, args=(listener,),
                                            name=f"debug accept {_where(listener)}",
                                            daemon=True)
                           for listener in self._listeners]

    def on_start(self) -> None:
        for acceptor in self._acceptors:
            acceptor.start()
        log.info("Serving the debug port on %s", ", ".join(self.addresses()))

    def on_stop(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
        for acceptor in self._acceptors:
            acceptor.join(FLUSH_TIMEOUT)
        self._close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        for client in clients:
            client.thread.join(FLUSH_TIMEOUT * 3)

    def addresses(self) -> list[str]:
        """``unix:///PATH``, and ``tcp://HOST:PORT`` when TCP is on."""
        return [_where(listener) for listener in self._listeners]

    def _close(self) -> None:
        for listener in self._listeners:
            listener.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(self._path.lstat().st_mode):
                self._path.unlink()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = listener.accept()
            except OSError as error:
                if not self._stopping.is_set():
                    log.error("Debug port: accept failed: %s", error)
                    self._stopping.wait(1.0)  # e.g. out of file descriptors: do not spin
                continue
            peer = self._identify(sock, address)
            if peer is not None:
                self._admit(sock, peer)

    def _identify(self, sock: socket.socket, address: object) -> _Peer | None:
        """Who is at the other end of ``sock``, if it may be served; else it is refused."""
        if sock.family == socket.AF_UNIX:
            pid, uid, _gid = PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
            if uid in self._trusted:
                return _Peer(f"uid {uid} (pid {pid})", root=True)
            log.warning("Debug port: refused uid %d (pid %d): the socket serves only root",
                        uid, pid)
            _refuse(sock, Forbidden(f"the debug socket serves only root, not uid {uid}"))
            return None
        assert isinstance(address, tuple)
        host, port = address[0], address[1]
        if client_allowed(host, self._hosts_allow):
            return _Peer(f"{host}:{port}", root=False)
        log.warning("Debug port: refused %s: not allowed by xend-hosts-allow", host)
        _refuse(sock, Forbidden(f"client {host} is not allowed by xend-hosts-allow"))
        return None

    def _admit(self, sock: socket.socket, peer: _Peer) -> None:
        with self._lock:
            client = None
            if len(self._clients) < MAX_CLIENTS:
                client = _Client(sock, peer, self._context, self._forget)
                self._clients.add(client)
        if client is not None:
            client.start()
            return
        log.warning("Debug port: refused %s, already %d clients", peer.where, MAX_CLIENTS)
        _refuse(sock, XendError(f"too many debug clients (at most {MAX_CLIENTS})"))

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)


def _bind_unix(path: Path) -> socket.socket:
    """The listening socket at ``path`` (mode 0600), in place of a socket a xend before
    this one left there; anything else there is left alone and fails the start."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # the pid file's lock says no other xend uses this run dir
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as error:
        raise XendError(f"cannot listen on unix://{path}: {error.strerror or error}") from None
    try:
        listener.bind(str(path))
        # Until the chmod the socket has the umask's mode, in a run dir only root enters.
        os.chmod(path, 0o600)
        listener.listen(MAX_CLIENTS)
    except OSError as error:
        listener.close()
        raise XendError(f"cannot listen on unix://{path}: {error.strerror or error}") from None
    return listener


def _bind_tcp(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=MAX_CLIENTS)
    except OSError as error:
        raise XendError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def _where(listener: socket.socket) -> str:
    if listener.family == socket.AF_UNIX:
        return f"unix://{listener.getsockname()}"
    host, port = listener.getsockname()[:2]
    return f"tcp://{host}:{port}"


def _refuse(sock: socket.socket, error: XendError) -> None:
    """Send a client one error line and close it."""
    with sock, contextlib.suppress(OSError):
        sock.settimeout(REFUSE_TIMEOUT)
        sock.sendall((sxp.show(error_sxpr(error)) + "\n").encode())
        sock.shutdown(socket.SHUT_WR)
        # What it sent already is read and dropped: closed unread, it would reset the
        # connection, and the client might lose the line before reading it.
        sock.setblocking(False)
        while sock.recv(RECV_SIZE):
            pass


class DebugServerProxy(ActorMemberMixin, pykka.ActorProxy[DebugServer]):
    addresses = proxy_method(DebugServer.addresses)
