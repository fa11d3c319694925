"""The debug port (facts §11.3): xend's events out, SXP requests in, over plain TCP.

``DebugServer`` owns the listener (bound in ``__init__``, so a port in use fails
xend's start) and its clients, at most ``MAX_CLIENTS``. Each client is subscribed
to ``*`` on connect and has two threads: a reader that parses and serves its
requests, and a writer that sends replies and events, in order, from a bounded
queue, so the event bus never waits on a slow client; one that falls
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
* ``(exit)`` is refused unless the client is on this host;
* a console's id is its port, as over HTTP (facts §15 item 14).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import logs, sxp, trace
from xend_actors.access.hosts import is_local
from xend_actors.actors import ask
from xend_actors.config import XendConfig
from xend_actors.console.hub import ConsolesProxy
from xend_actors.debug.requests import RequestReader, error_sxpr, normalize, on_off, reply
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


# --- one client -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What a client's requests may reach."""

    events: EventBusProxy
    consoles: ConsolesProxy | None
    trace_file: Path
    shutdown: Callable[[], None]


Handler = Callable[["_Client", list[sxp.Value]], sxp.Value | None]
_OPS: dict[str, Handler] = {}


def _op(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _OPS[name] = handler
        return handler

    return register


class _Client:
    """One connection: its reader and writer threads, its subscription, its ops."""

    def __init__(self, sock: socket.socket, host: str, port: int, context: _Context,
                 forget: Callable[[_Client], None]) -> None:
        self.host = host
        self.where = f"{host}:{port}"
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
        if not is_local(self.host):
            raise Forbidden(f"exit is only allowed from this host, not from {self.host}")
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
    """Serves the debug port on ``xend-address``:``xend-event-port``.

    ``shutdown`` stops xend; it is called for ``(exit)`` once the reply is sent.
    ``consoles`` is the Consoles actor, if xend has one.
    """

    def __init__(self, config: XendConfig, events: EventBusProxy,
                 shutdown: Callable[[], None], consoles: ConsolesProxy | None = None) -> None:
        super().__init__()
        host, port = config.http_address or "0.0.0.0", config.event_port
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            self._listener = socket.create_server((host, port), family=family,
                                                  backlog=MAX_CLIENTS)
        except OSError as error:
            raise XendError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
        self._context = _Context(events, consoles, config.trace_file, shutdown)
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()  # the accept thread and the clients' threads share it
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="debug accept",
                                          daemon=True)

    def on_start(self) -> None:
        self._acceptor.start()
        log.info("Serving the debug port on %s", self.address())

    def on_stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
        self._listener.close()
        self._acceptor.join(FLUSH_TIMEOUT)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        for client in clients:
            client.thread.join(FLUSH_TIMEOUT * 3)

    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"tcp://{host}:{port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except OSError as error:
                if not self._stopping.is_set():
                    log.error("Debug port: accept failed: %s", error)
                    self._stopping.wait(1.0)  # e.g. out of file descriptors: do not spin
                continue
            self._admit(sock, address[0], address[1])

    def _admit(self, sock: socket.socket, host: str, port: int) -> None:
        with self._lock:
            client = None
            if len(self._clients) < MAX_CLIENTS:
                client = _Client(sock, host, port, self._context, self._forget)
                self._clients.add(client)
        if client is not None:
            client.start()
            return
        log.warning("Debug port: refused %s, already %d clients", host, MAX_CLIENTS)
        busy = XendError(f"too many debug clients (at most {MAX_CLIENTS})")
        with sock:
            sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                sock.sendall((sxp.show(error_sxpr(busy)) + "\n").encode())

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)


class DebugServerProxy(ActorMemberMixin, pykka.ActorProxy[DebugServer]):
    address = proxy_method(DebugServer.address)
