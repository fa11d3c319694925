"""The connections' loop: one selector thread for every listener and every waiting connection.

A connection waits here (an epoll), holding no thread, whenever it waits for its client: a new
one for its first bytes (or its TLS handshake's next flight), one with half a request
for the rest, a kept-alive one for its next request. When bytes come it goes to a
worker (``Workers``, ``xend-http-workers`` threads at most, a bounded queue after),
which reads what has come (``HttpConnection.advance``) and answers a whole request, and
gives the connection back when it waits again. Deadlines are kept here: a request that
comes too slowly gets its 408, an unfinished handshake or a connection idle for
``xend-keepalive-timeout`` seconds is closed.

A request that waits by design (a long-poll, an event stream, a WebSocket: the app's
``lingers`` says which) is answered on a thread of its own, at most ``lingering`` of
them, so that however many wait, short requests always find a worker. A connection past
the admission caps, or a request past every bound, gets a 503 at once.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.types import WSGIApplication, WSGIEnvironment

from xend_actors.web.admission import Admission, client_of, refuse
from xend_actors.web.http_connection import HttpConnection, Step
from xend_actors.web.workers import Workers

log = logging.getLogger(__name__)

POLL = 0.5  # seconds the loop sleeps at most: the heap trim's tick
NEXT_SOON = 0.002  # seconds a worker waits for a kept-alive client's next request itself
DEADLINES_CHECKED = 0.1  # seconds between looks at the waiting connections' deadlines
ACCEPTED_AT_ONCE = 64  # connections accepted from one listener before looking elsewhere
_BUSY = "xend is busy; try again later"


@dataclass(frozen=True)
class Listener:
    """A listening socket and what its connections are served: the app (its door's
    gate in front), TLS or not, and the server name and port the environ tells."""

    sock: socket.socket
    app: WSGIApplication
    tls: ssl.SSLContext | None
    server: tuple[str, int]


@dataclass(frozen=True)
class Limits:
    read_timeout: float  # xend-read-timeout
    keepalive: float  # xend-keepalive-timeout
    lingering: int  # requests that wait by design, answered at once


class ConnectionLoop:
    """The loop's connections are in one epoll, each armed for one event at a time
    (``EPOLLONESHOT``): a worker that gives a connection back re-arms it itself, so a
    kept-alive request costs the loop one wake-up, and nothing is registered anew."""

    def __init__(self, listeners: list[Listener], admission: Admission, workers: Workers,
                 limits: Limits, lingers: Callable[[WSGIEnvironment], bool]) -> None:
        self._listeners = listeners
        self._admission = admission
        self._workers = workers
        self._limits = limits
        self._lingers = lingers
        self._lingering = threading.BoundedSemaphore(limits.lingering)
        self._epoll = select.epoll()
        self._wake, self._waker = socket.socketpair()  # for the stop
        self._wake.setblocking(False)
        self._waker.setblocking(False)
        self._lock = threading.Lock()
        self._fds: dict[int, HttpConnection] = {}  # every open connection, by descriptor
        self._waiting: dict[HttpConnection, Listener] = {}  # armed: the loop's until an event
        self._stopping = False

    def run(self) -> None:
        """The loop, on its own thread, until ``stop``."""
        listeners = {listener.sock.fileno(): listener for listener in self._listeners}
        for fd, listener in listeners.items():
            listener.sock.setblocking(False)
            self._epoll.register(fd, select.EPOLLIN)
        self._epoll.register(self._wake.fileno(), select.EPOLLIN)
        checked = time.monotonic()
        try:
            while not self._stopping:
                timeout = DEADLINES_CHECKED if self._waiting else POLL
                for fd, _ in self._epoll.poll(timeout):
                    if fd in listeners:
                        self._accept(listeners[fd])
                    elif (connection := self._fds.get(fd)) is not None:
                        self._dispatch(connection)
                if (now := time.monotonic()) - checked >= DEADLINES_CHECKED:
                    checked = now
                    self._expire(now)
                self._admission.tick()
        finally:
            self._close_all()

    def stop(self) -> None:
        """Stop: the listeners and the waiting connections are closed at once; a request
        being answered is answered, and its connection closed."""
        self._stopping = True
        self._workers.stop()
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")

    # --- on the loop's thread ---------------------------------------------------------

    def _accept(self, listener: Listener) -> None:
        for _ in range(ACCEPTED_AT_ONCE):
            try:
                sock, address = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and the like: the next poll tries again
                log.warning("accept on %s: %s", listener.sock.getsockname(), error)
                return
            try:
                client = client_of(sock, address)
            except OSError:  # gone already
                sock.close()
                continue
            refusal = self._admission.admit(client)
            if refusal is not None:
                refuse(sock, refusal, speak=listener.tls is None)
                continue
            try:
                connection = HttpConnection(sock, address, client, tls=listener.tls,
                                            read_timeout=self._limits.read_timeout,
                                            server=listener.server)
            except OSError:
                sock.close()
                self._admission.release(client)
                continue
            with self._lock:
                self._fds[connection.fd] = connection
            self._wait(connection, listener, Step.READ, register=True)

    def _dispatch(self, connection: HttpConnection) -> None:
        with self._lock:
            listener = self._waiting.pop(connection, None)
        if listener is None:  # not armed: an event from before its close
            return
        connection.unpark(time.monotonic())
        if not self._workers.submit(lambda: self._serve(connection, listener)):
            self._refuse(connection, listener)

    def _expire(self, now: float) -> None:
        keepalive = self._limits.keepalive
        with self._lock:
            due = [connection for connection in self._waiting
                   if connection.deadline(keepalive) <= now]
            for connection in due:
                del self._waiting[connection]
        for connection in due:
            self._forget(connection)
            connection.expire()
            self._admission.release(connection.client)

    def _close_all(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
        for connection in waiting:
            self._close(connection)
        self._epoll.close()
        self._wake.close()

    # --- on either --------------------------------------------------------------------

    def _wait(self, connection: HttpConnection, listener: Listener, step: Step,
              register: bool = False) -> None:
        """The connection waits in the loop for its client (``step``: to read or write)."""
        events = select.EPOLLONESHOT | (
            select.EPOLLOUT if step is Step.WRITE else select.EPOLLIN)
        with self._lock:
            if self._stopping:
                closing = True
            else:
                closing = False
                connection.park(time.monotonic())
                self._waiting[connection] = listener
        if closing:
            self._close(connection)
            return
        try:
            if register:
                self._epoll.register(connection.fd, events)
            else:
                self._epoll.modify(connection.fd, events)
        except (OSError, ValueError):  # closed meanwhile, or the loop's epoll is
            with self._lock:
                self._waiting.pop(connection, None)
            self._close(connection)

    def _forget(self, connection: HttpConnection) -> None:
        """Out of the epoll and the table, before its descriptor is closed (and reused)."""
        with self._lock:
            if self._fds.get(connection.fd) is connection:
                del self._fds[connection.fd]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(connection.fd)

    # --- on a worker ------------------------------------------------------------------

    def _serve(self, connection: HttpConnection, listener: Listener,
               environ: WSGIEnvironment | None = None, lingering: bool = False) -> None:
        """Answer the requests that have come on ``connection``, then give it back to the
        loop to wait for more (or close it)."""
        try:
            step = Step.REQUEST if environ is not None else connection.advance()
            while step is Step.REQUEST:
                environ = environ or connection.environ()
                if not lingering and self._lingers(environ):
                    self._linger(connection, listener, environ)
                    return
                keep = connection.respond(listener.app, environ, keep=not self._stopping)
                environ = None
                step = connection.advance(readable=False) if keep else Step.CLOSE
                if step is Step.READ and self._next_soon(connection):
                    step = connection.advance()
        except Exception:
            log.exception("HTTP connection failed")
            step = Step.CLOSE
        if step is Step.CLOSE:
            self._close(connection)
        else:
            self._wait(connection, listener, step)

    def _next_soon(self, connection: HttpConnection) -> bool:
        """Whether the client's next bytes came within ``NEXT_SOON`` (or it closed), waited
        for on this worker while no other task wants it: a client sending one request
        after another (xm's, a program's) is answered without the two hand-offs through
        the loop (its wake-up, then a worker's)."""
        return not self._stopping and self._workers.linger(connection.fd, NEXT_SOON)

    def _linger(self, connection: HttpConnection, listener: Listener,
                environ: WSGIEnvironment) -> None:
        """Answer a request that waits by design on a thread of its own."""
        if not self._lingering.acquire(blocking=False):
            self._refuse(connection, listener)
            return

        def lingered() -> None:
            try:
                self._serve(connection, listener, environ, lingering=True)
            finally:
                self._lingering.release()

        try:
            threading.Thread(target=lingered, name="http waiting", daemon=True).start()
        except RuntimeError:
            self._lingering.release()
            self._refuse(connection, listener)

    def _refuse(self, connection: HttpConnection, listener: Listener) -> None:
        """A 503 for a connection past every bound (unanswered in a TLS handshake)."""
        speak = listener.tls is None or isinstance(connection.sock, ssl.SSLSocket)
        refuse(connection.sock, _BUSY, speak=speak)
        self._close(connection)

    def _close(self, connection: HttpConnection) -> None:
        self._forget(connection)
        connection.close()
        self._admission.release(connection.client)
