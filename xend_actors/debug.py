"""The debug port (facts §11.3): xend's events out, SXP requests in, over plain TCP.

``DebugServer`` owns the listener (bound in ``__init__``, so a port in use fails
xend's start) and its clients, at most ``MAX_CLIENTS``. Each client is subscribed
to ``*`` on connect and has two threads: a reader that parses and serves its
requests, and a writer that sends replies and events, in order, from a bounded
queue, so the event bus never waits on a slow client; one that falls
``MAX_QUEUED`` messages behind is disconnected.

A request is an SXP form ``(OP ARG ...)``, the op's dots and underscores alike
(``log.stderr`` = ``log_stderr``); a bare word is an op without arguments, and
xend.tex's ``traceon`` / ``traceoff`` are ``(trace on)`` / ``(trace off)``. Replies
are ``(ok RESULT)``, or ``(ok)`` when there is nothing to say; errors are
``(err (type T) (value V))``. Output is pretty-printed unless ``(pretty off)``.

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
import ipaddress
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pykka

from xend_actors import logs, sxp, trace
from xend_actors.config import XendConfig
from xend_actors.errors import BadRequest, Forbidden, XendError
from xend_actors.events import Event
from xend_actors.trace import TracedActor
from xend_actors.web.services import answer

log = logging.getLogger(__name__)

MAX_CLIENTS = 16
MAX_REQUEST = 64 * 1024  # bytes of one line of requests
MAX_DEPTH = 32
MAX_QUEUED = 1000  # replies and events waiting for a client before it is dropped
FLUSH_TIMEOUT = 5.0  # for a closing client's last replies to go out
RECV_SIZE = 4096

# Plain-line commands of xend.tex that are not simply an op's name.
_PLAIN = {"traceon": ("trace", "on"), "traceoff": ("trace", "off")}


# --- reading requests -------------------------------------------------------------------


class RequestReader:
    """Cuts one client's bytes into lines, and lines into requests or errors to reply with."""

    def __init__(self, max_size: int = MAX_REQUEST, max_depth: int = MAX_DEPTH) -> None:
        self.max_size = max_size
        self.max_depth = max_depth
        self._buffer = bytearray()  # the start of a line
        self._skipping = False  # the rest of an oversized line is thrown away

    def feed(self, data: bytes) -> list[sxp.Value | BadRequest]:
        """The requests on the lines ``data`` completes; errors in place of bad ones."""
        *ends, rest = data.split(b"\n")
        results: list[sxp.Value | BadRequest] = []
        for end in ends:
            line = bytes(self._buffer) + end
            self._buffer.clear()
            if self._skipping:
                self._skipping = False
            elif len(line) > self.max_size:
                results.append(self._too_long())
            else:
                results += self._parse(line)
        if not self._skipping:
            self._buffer += rest
            if len(self._buffer) > self.max_size:
                results.append(self._too_long())
                self._skipping = True
                self._buffer.clear()
        return results

    def _too_long(self) -> BadRequest:
        return BadRequest(f"line longer than {self.max_size} bytes")

    def _parse(self, line: bytes) -> list[sxp.Value | BadRequest]:
        """Every form on ``line``; after bad SXP, an error and nothing more."""
        parser = sxp.Parser(max_depth=self.max_depth, max_size=self.max_size)
        error = None
        try:
            parser.input(line)
            parser.input_eof()
        except sxp.ParseError as e:
            error = e
        results: list[sxp.Value | BadRequest] = []
        while parser.ready():
            results.append(parser.get_val())
        if error is not None:
            reason = error.reason
            if reason == "unexpected EOF":
                reason = "the line ends inside a form"
            results.append(BadRequest(f"bad SXP at column {error.column}: {reason}"))
        return results


def normalize(request: sxp.Value) -> list[sxp.Value]:
    """The request as ``[OP, ARG...]`` with the op's canonical (dotted) name."""
    if isinstance(request, str):
        return list(_PLAIN.get(request, (request,)))
    if not request or not isinstance(request[0], str):
        raise BadRequest("expected (OP ARG ...) or a plain command such as help")
    return [request[0].replace("_", "."), *request[1:]]


def is_local(host: str) -> bool:
    """Whether a client at ``host`` is on this host (127.0.0.0/8 or ::1)."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _on_off(form: list[sxp.Value]) -> bool:
    if len(form) != 2 or form[1] not in ("on", "off"):
        raise BadRequest(f"expected ({form[0]} on) or ({form[0]} off)")
    return form[1] == "on"


def _error_sxpr(error: Exception) -> sxp.Value:
    value = error.message if isinstance(error, XendError) else str(error)
    return ["err", ["type", type(error).__name__], ["value", value]]


# --- one client -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What a client's requests may reach."""

    events: pykka.ActorProxy
    consoles: pykka.ActorProxy | None
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
            answer(self._context.events.subscribe(self, "*"), "the event bus")
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
                answer(self._context.events.unsubscribe(self), "the event bus")
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
            handler = _OPS.get(form[0])
            if handler is None:
                raise BadRequest(f"unknown op {form[0]}; (help) lists the ops")
            result = handler(self, form)
        except XendError as error:
            self._send(_error_sxpr(error))
        except Exception as error:
            log.exception("Debug port request %s failed", sxp.show(request))
            self._send(_error_sxpr(error))
        else:
            if form[0] != "quit":  # quit just closes, as in the original
                self._send(["ok"] if result is None else ["ok", result])

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
        self._pretty = len(form) == 1 or _on_off(form)

    @_op("info")
    def _info(self, form: list[sxp.Value]) -> sxp.Value:
        consoles = self._context.consoles
        infos = [] if consoles is None else answer(consoles.infos(), "the consoles")
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
        answer(self._context.consoles.disconnect(int(port)), "the consoles")

    @_op("sys.subscribe")
    def _subscribe(self, form: list[sxp.Value]) -> None:
        patterns = form[1:]
        if not all(isinstance(pattern, str) for pattern in patterns):
            raise BadRequest("expected (sys.subscribe PATTERN ...), e.g. xend.domain.*")
        answer(self._context.events.subscribe(self, *patterns), "the event bus")

    @_op("sys.inject")
    def _inject(self, form: list[sxp.Value]) -> None:
        event = form[1] if len(form) == 2 else None
        if not isinstance(event, list) or not event or not isinstance(event[0], str):
            raise BadRequest("expected (sys.inject (NAME ...))")
        self._context.events.publish(event[0], event)

    @_op("trace")
    def _trace(self, form: list[sxp.Value]) -> None:
        if _on_off(form):
            trace.start(self._context.trace_file)
        else:
            trace.stop()

    @_op("log.stderr")
    def _log_stderr(self, form: list[sxp.Value]) -> None:
        logs.set_stderr(_on_off(form))

    @_op("debug.msg")
    def _debug_msg(self, form: list[sxp.Value]) -> None:
        trace.switches.messages = _on_off(form)

    @_op("debug.controller")
    def _debug_controller(self, form: list[sxp.Value]) -> None:
        trace.switches.controllers = _on_off(form)


# --- the server -----------------------------------------------------------------------


class DebugServer(TracedActor):
    """Serves the debug port on ``xend-address``:``xend-event-port``.

    ``shutdown`` stops xend; it is called for ``(exit)`` once the reply is sent.
    ``consoles`` is the Consoles actor, if xend has one.
    """

    def __init__(self, config: XendConfig, events: pykka.ActorProxy,
                 shutdown: Callable[[], None], consoles: pykka.ActorProxy | None = None) -> None:
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
                sock.sendall((sxp.show(_error_sxpr(busy)) + "\n").encode())

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)
