"""The connections' loop: one selector thread for every listener and every waiting connection.

A connection waits here, holding no thread, whenever it waits for its client: a new
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

import collections
import contextlib
import logging
import selectors
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
    def __init__(self, listeners: list[Listener], admission: Admission, workers: Workers,
                 limits: Limits, lingers: Callable[[WSGIEnvironment], bool]) -> None:
        self._listeners = listeners
        self._admission = admission
        self._workers = workers
        self._limits = limits
        self._lingers = lingers
        self._lingering = threading.BoundedSemaphore(limits.lingering)
        self._selector = selectors.DefaultSelector()
        self._wake, self._waker = socket.socketpair()
        self._wake.setblocking(False)
        self._waker.setblocking(False)
        self._returned: collections.deque[tuple[HttpConnection, Listener, Step]] = \
            collections.deque()
        self._waiting: dict[HttpConnection, Listener] = {}
        self._stopping = False

    def run(self) -> None:
        """The loop, on its own thread, until ``stop``."""
        selector = self._selector
        for listener in self._listeners:
            listener.sock.setblocking(False)
            selector.register(listener.sock, selectors.EVENT_READ, listener)
        selector.register(self._wake, selectors.EVENT_READ, None)
        checked = time.monotonic()
        try:
            while not self._stopping:
                timeout = DEADLINES_CHECKED if self._waiting else POLL
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        self._take_returned()
                    elif isinstance(key.data, Listener):
                        self._accept(key.data)
                    else:
                        self._dispatch(key.fileobj)  # type: ignore[arg-type]
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
        self._wakeup()

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
            self._wait(connection, listener, Step.READ, time.monotonic())

    def _wait(self, connection: HttpConnection, listener: Listener, step: Step,
              now: float) -> None:
        connection.park(now)
        events = selectors.EVENT_WRITE if step is Step.WRITE else selectors.EVENT_READ
        try:
            self._selector.register(connection.sock, events, connection)
        except (OSError, ValueError):  # closed meanwhile
            self._close(connection)
            return
        self._waiting[connection] = listener

    def _dispatch(self, sock: socket.socket) -> None:
        key = self._selector.unregister(sock)
        connection: HttpConnection = key.data
        listener = self._waiting.pop(connection)
        connection.unpark(time.monotonic())
        if not self._workers.submit(lambda: self._serve(connection, listener)):
            self._refuse(connection, listener)

    def _take_returned(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake.recv(4096):
                pass
        now = time.monotonic()
        while self._returned:
            connection, listener, step = self._returned.popleft()
            if self._stopping:
                self._close(connection)
            else:
                self._wait(connection, listener, step, now)

    def _expire(self, now: float) -> None:
        keepalive = self._limits.keepalive
        due = [connection for connection in self._waiting
               if connection.deadline(keepalive) <= now]
        for connection in due:
            self._selector.unregister(connection.sock)
            del self._waiting[connection]
            connection.expire()
            self._admission.release(connection.client)

    def _close_all(self) -> None:
        for connection in list(self._waiting):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(connection.sock)
            self._close(connection)
        self._waiting.clear()
        while self._returned:
            self._close(self._returned.popleft()[0])
        self._selector.close()
        self._wake.close()

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
                step = connection.advance() if keep else Step.CLOSE
        except Exception:
            log.exception("HTTP connection failed")
            step = Step.CLOSE
        if step is Step.CLOSE or self._stopping:
            self._close(connection)
            return
        self._returned.append((connection, listener, step))
        self._wakeup()

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
        connection.close()
        self._admission.release(connection.client)

    def _wakeup(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is on its way already
            self._waker.send(b"\0")
