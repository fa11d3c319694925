"""Notify URLs: every event POSTed to each URL an operator registered (facts §4.4 ``notify``).

The Notifier actor owns the registrations, kept in ``<dbroot>/notify/`` (one record
per URL) so they survive a restart, and one delivery thread per URL. It subscribes
to every event; each is handed to each URL's bounded queue, and that URL's thread
POSTs them in order, body the event as ``(event (seq N) (time T) (name NAME) (value
V))``, ``Content-Type: application/sxp``. An event that fails ``ATTEMPTS`` times, or
finds the queue full, is dropped for that URL; a receiver that must not miss one
catches up with ``GET /xend/event/?since=N``. A URL that fails is logged once and then
counted as down: its events are dropped without a try until its next retry, which
backs off from ``DOWN_RETRY`` to ``DOWN_RETRY_MAX`` seconds; when it answers again the
log says so and how many events it missed. A full queue is logged once too, until it
drains.

xend only posts where ``xend-hosts-allow`` would let a client in: plain http, to an IP
address or ``localhost``; names are not looked up, so what was checked is what is
contacted.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.access.hosts import client_allowed
from xend_actors.errors import BadRequest, Conflict, Forbidden, NotFound, XendError
from xend_actors.events.event import Event
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

MAX_URLS = 16
MAX_URL_LENGTH = 1024
QUEUE_SIZE = 1000  # events waiting for one URL before new ones are dropped
ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the second attempt, doubling for each further one
DOWN_RETRY = 1.0  # seconds from a URL found down to its next try, doubling each time
DOWN_RETRY_MAX = 60.0
POST_TIMEOUT = 5.0
STOP_TIMEOUT = POST_TIMEOUT + 1.0


def check_url(url: str, hosts_allow: Sequence[re.Pattern[str]]) -> str:
    """``url`` if xend may POST events to it; else a BadRequest or Forbidden saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"notify URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise BadRequest(f"bad notify URL {url!r}: {error}") from None
    if parts.scheme != "http" or not parts.hostname or parts.username is not None:
        raise BadRequest(f"bad notify URL {url!r}: expected http://ADDRESS[:PORT]/PATH")
    host = parts.hostname
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BadRequest(f"notify URL {url!r}: the host must be an IP address or "
                             "localhost (xend looks no names up)") from None
    if not client_allowed("127.0.0.1" if host == "localhost" else host, hosts_allow):
        raise Forbidden(f"notify URL {url} is not allowed by xend-hosts-allow")
    return url


class Notifier(TracedActor):
    """Keeps the notify URLs and tells each event to every URL's delivery thread."""

    def __init__(self, hosts_allow: Sequence[re.Pattern[str]], folder: Path) -> None:
        super().__init__()
        self._hosts_allow = hosts_allow
        self._records = RecordDir(folder)
        self._stored = [url for url in map(_url_of, self._records.load_all().values()) if url]
        self._deliveries: dict[str, Delivery] = {}

    def on_start(self) -> None:
        for url in self._stored:
            try:
                self._deliveries[check_url(url, self._hosts_allow)] = Delivery(url)
            except XendError as error:
                log.warning("Stored notify URL not used: %s", error)

    def on_stop(self) -> None:
        for delivery in self._deliveries.values():
            delivery.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for delivery in self._deliveries.values():
            delivery.join(max(0.0, deadline - time.monotonic()))

    def on_receive(self, message: object) -> object:
        if isinstance(message, Event):
            for delivery in self._deliveries.values():
                delivery.offer(message)
            return None
        return super().on_receive(message)

    def urls(self) -> list[str]:
        """The registered URLs, sorted."""
        return sorted(self._deliveries)

    def register(self, url: str) -> None:
        """Post every event from now on to ``url``; registering it again changes nothing."""
        url = check_url(url, self._hosts_allow)
        if url in self._deliveries:
            return
        if len(self._deliveries) >= MAX_URLS:
            raise Conflict(f"already {MAX_URLS} notify URLs; remove one first")
        self._records.write(_key(url), ["notify", ["url", url]])
        self._deliveries[url] = Delivery(url)
        log.info("Notify URL registered: %s", url)

    def unregister(self, url: str) -> None:
        """Stop posting events to ``url`` and forget it."""
        delivery = self._deliveries.pop(url, None)
        if delivery is None:
            raise NotFound(f"no notify URL {url}")
        self._records.delete(_key(url))
        delivery.stop()
        log.info("Notify URL removed: %s", url)


class NotifierProxy(ActorMemberMixin, pykka.ActorProxy[Notifier]):
    urls = proxy_method(Notifier.urls)
    register = proxy_method(Notifier.register)
    unregister = proxy_method(Notifier.unregister)


class Delivery:
    """One URL's thread: POSTs its events in order, each a few times at most, or none
    while the URL is down and its retry not yet due."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._queue: queue.Queue[Event | None] = queue.Queue(QUEUE_SIZE)
        self._stopping = threading.Event()
        self._overflow = 0  # events dropped on a full queue since it last drained
        self._down_since: float | None = None
        self._missed = 0  # events dropped since the URL went down
        self._retry_wait = DOWN_RETRY
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"notify {url}", daemon=True)
        self._thread.start()

    def offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._overflow += 1
            if self._overflow == 1:
                log.warning("Notify %s: %d events waiting; new ones are dropped until it "
                            "catches up (event %d, %s, the first)", self.url, QUEUE_SIZE,
                            event.seq, event.name)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        with contextlib.closing(Poster(self.url)) as poster:
            while not self._stopping.is_set():
                event = self._queue.get()
                if event is not None:
                    self._deliver(poster, event)
                if self._overflow and self._queue.empty():
                    log.info("Notify %s: caught up; %d events were dropped on a full "
                             "queue", self.url, self._overflow)
                    self._overflow = 0
        if not self._queue.empty():
            log.info("Notify %s: stopped with %d events not sent", self.url, self._queue.qsize())

    def _deliver(self, poster: Poster, event: Event) -> None:
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            self._missed += 1
            return
        problem = self._post(poster, event, 1 if self._down_since is not None else ATTEMPTS)
        now = time.monotonic()
        if self._stopping.is_set():
            return
        if problem is None:
            if self._down_since is not None:
                log.info("Notify %s: answering again after %.0f s; %d events were dropped "
                         "meanwhile", self.url, now - self._down_since, self._missed)
                self._down_since, self._missed, self._retry_wait = None, 0, DOWN_RETRY
            return
        self._missed += 1
        if self._down_since is None:
            log.warning("Notify %s: event %d (%s) dropped after %d attempts: %s; its events "
                        "are dropped until it answers again, tried at most every %g s",
                        self.url, event.seq, event.name, ATTEMPTS, problem, DOWN_RETRY_MAX)
            self._down_since, self._retry_wait = now, DOWN_RETRY
        else:
            self._retry_wait = min(self._retry_wait * 2, DOWN_RETRY_MAX)
        self._retry_at = now + self._retry_wait

    def _post(self, poster: Poster, event: Event, attempts: int) -> str | None:
        """POST ``event``, up to ``attempts`` times; None once it is taken, else why not."""
        body = sxp.show(event.record()).encode()
        problem = "stopping"
        for attempt in range(attempts):
            if attempt and self._stopping.wait(BACKOFF * 2 ** (attempt - 1)):
                break
            try:
                status, reason = poster.post(body)
            except (OSError, http.client.HTTPException) as error:
                problem = str(error) or type(error).__name__
                continue
            if 200 <= status < 300:
                return None
            problem = f"HTTP {status} {reason}"
        return problem


class Poster:
    """POSTs to one URL on a kept-alive connection (the standard library's: no proxy from
    the environment sees events meant for loopback, and no HTTP library is loaded)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The port always given: http.client would read an IPv6 address's last group as one.
        self._connection = http.client.HTTPConnection(
            parts.hostname or "", parts.port or 80, timeout=POST_TIMEOUT)

    def post(self, body: bytes) -> tuple[int, str]:
        """The status and reason of POSTing ``body``; OSError or HTTPException if none came."""
        reused = self._connection.sock is not None
        try:
            return self._exchange(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # The receiver closed the kept-alive connection while it was idle: a new one.
            return self._exchange(body)

    def _exchange(self, body: bytes) -> tuple[int, str]:
        try:
            self._connection.request("POST", self._path, body,
                                     {"Content-Type": sxp.MIME_TYPE})
            reply = self._connection.getresponse()
            reply.read()
        except BaseException:
            self._connection.close()
            raise
        return reply.status, reply.reason

    def close(self) -> None:
        self._connection.close()


def _key(url: str) -> str:
    """The store key of a URL: URLs hold characters a file name may not."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def _url_of(record: sxp.Value) -> str | None:
    url = sxp.child_value(record, "url")
    return url if isinstance(url, str) else None
