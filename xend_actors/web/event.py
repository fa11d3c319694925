"""The ``/xend/event`` resource: the event log over HTTP, and injecting an event.

``GET /xend/event/`` answers ``(ls )`` as the original did. With ``?since=N`` it is a
long-poll: the events numbered after N at once, else it waits up to ``timeout`` seconds
for the next; the reply is a list of ``(event (seq N) (time T) (name NAME) (value V))``,
``()`` when none came. With ``Accept: text/event-stream`` it is a stream of Server-Sent
Events (``id: SEQ``, ``event: NAME``, ``data: VALUE`` as SXP) that resumes after
``Last-Event-ID`` or ``since`` (else starts with the next event).

A long-poll or a stream waits in its own request thread on a wake-up queue, never in
an actor; the events themselves always come from the bus's log, so a slow reader
cannot miss one while the log still holds it. Waiting clients are bounded.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator
from wsgiref.types import WSGIEnvironment

import pykka
from werkzeug import Request, Response

from xend_actors import sxp
from xend_actors.config import XendConfig
from xend_actors.errors import BadRequest, XendError
from xend_actors.events.bus import EventBusProxy, QueueSubscriber
from xend_actors.events.event import Event
from xend_actors.web.forms import Kind, Param, decode, optional
from xend_actors.web.resource import Answer, Resource, op
from xend_actors.web.services import Services, answer

log = logging.getLogger(__name__)

SSE_MIMETYPE = "text/event-stream"
POLL_TIMEOUT = 30  # seconds a long-poll waits by default ...
MAX_POLL_TIMEOUT = 60  # ... and at most
STREAM_LIFETIME = 600  # seconds a stream lasts at most; the client then resumes
HEARTBEAT = 15.0  # seconds between keep-alive comments, which find closed streams
RETRY_MS = 2000  # the reconnection delay a stream asks of its client
MAX_BATCH = 1000  # events in one reply or one read of the log
MAX_WATCHERS = XendConfig.max_waiting  # long-polls and streams waiting at once, by default

_QUERY = (optional("since", Kind.INT), optional("timeout", Kind.INT))
_EVENT_NAME = re.compile(r"[^\s()]{1,200}")


class EventWatch:
    """One request thread's view of the bus: the events after a number, as they come.

    The subscription is only a wake-up call (a queue of one); what is new is read from
    the bus's log, so nothing is lost when wake-ups are dropped.
    """

    def __init__(self, bus: EventBusProxy, since: int) -> None:
        self.bus = bus
        self.last = since
        self._wakeup = QueueSubscriber(queue.Queue(maxsize=1))
        answer(bus.subscribe(self._wakeup, "*"), "the event bus")

    def next(self, wait: float) -> list[Event]:
        """The events after the last one returned; waits up to ``wait`` s for one."""
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(queue.Empty):
                self._wakeup.events.get_nowait()
            events = answer(self.bus.since(self.last, MAX_BATCH), "the event bus")
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                break
            with contextlib.suppress(queue.Empty):
                self._wakeup.events.get(timeout=remaining)
        if events:
            self.last = events[-1].seq
        return events

    def close(self) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.bus.unsubscribe(self._wakeup)


class EventResource(Resource):
    def __init__(self, services: Services) -> None:
        self.events = services.events
        self._most = services.config.max_waiting  # below the connection caps (server.py)
        self._watchers = threading.BoundedSemaphore(self._most)

    def get(self, request: Request, **url_args: str) -> Answer | Response:
        query = decode(_QUERY, request.args)
        since, timeout = _number(query["since"]), _number(query["timeout"])
        if (since is not None and since < 0) or (timeout is not None and timeout < 0):
            raise BadRequest("since and timeout must not be negative")
        if SSE_MIMETYPE in request.headers.get("Accept", ""):
            since = _last_event_id(request, since)
            if since is None:
                since = answer(self.events.last_seq(), "the event bus")
            lifetime = STREAM_LIFETIME if timeout is None else min(timeout, STREAM_LIFETIME)
            return self._stream(since, lifetime)
        if since is None:
            return ["ls"]
        timeout = POLL_TIMEOUT if timeout is None else min(timeout, MAX_POLL_TIMEOUT)
        return [event.record() for event in self._poll(since, timeout)]

    @op("inject", params=(Param("event", Kind.SXPR),))
    def inject(self, request: Request, event: sxp.Value) -> str:
        """Publish an event named by the SXP's name, with the whole SXP as its value."""
        name = sxp.name(event)
        if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
            raise BadRequest("event: expected (NAME ...) or a name, without spaces")
        self.events.publish(name, event)
        return "0"

    def _poll(self, since: int, timeout: float) -> list[Event]:
        self._take_watcher()
        try:
            watch = EventWatch(self.events, since)
            try:
                return watch.next(timeout)
            finally:
                watch.close()
        finally:
            self._watchers.release()

    def _stream(self, since: int, lifetime: float) -> Response:
        self._take_watcher()
        try:
            watch = EventWatch(self.events, since)
        except BaseException:
            self._watchers.release()
            raise
        response = Response(_sse(watch, lifetime), mimetype=SSE_MIMETYPE,
                            headers={"Cache-Control": "no-cache"})
        # On close, whether or not the body was ever read (a generator never started
        # runs no finally).
        response.call_on_close(watch.close)
        response.call_on_close(self._watchers.release)
        return response

    def _take_watcher(self) -> None:
        if not self._watchers.acquire(blocking=False):
            raise XendError(f"already {self._most} clients waiting for events; "
                            "try again later", status=503)


def waits(environ: WSGIEnvironment) -> bool:
    """Whether a request may wait for events (a long-poll or a stream): the server answers
    it on a thread of its own, never a worker (``http_loop``)."""
    return environ.get("PATH_INFO", "").rstrip("/") == "/xend/event" and (
        "since=" in environ.get("QUERY_STRING", "")
        or SSE_MIMETYPE in environ.get("HTTP_ACCEPT", ""))


def _number(value: object) -> int | None:
    """A decoded ``Kind.INT`` parameter that may be absent."""
    return value if isinstance(value, int) else None


def _last_event_id(request: Request, since: int | None) -> int | None:
    """Where a reconnecting stream resumes: ``Last-Event-ID`` wins over ``since``."""
    header = request.headers.get("Last-Event-ID", "").strip()
    if not header:
        return since
    if not header.isdigit():
        raise BadRequest(f"Last-Event-ID: expected an event number, got {header[:40]!r}")
    return int(header)


def _sse(watch: EventWatch, lifetime: float) -> Iterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    end = time.monotonic() + lifetime
    try:
        while (left := end - time.monotonic()) > 0:
            events = watch.next(min(HEARTBEAT, left))
            yield "".join(map(_sse_event, events)) if events else ": keep-alive\n\n"
    except (XendError, pykka.ActorDeadError) as error:
        log.info("Event stream ended: %s", error or type(error).__name__)


def _sse_event(event: Event) -> str:
    # show() prints one line whatever the text holds, so no field can break the framing.
    return f"id: {event.seq}\nevent: {sxp.show(event.name)}\ndata: {sxp.show(event.value)}\n\n"
