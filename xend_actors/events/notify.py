"""Notify URLs: every event POSTed to each URL an operator registered (facts §4.4 ``notify``).

The Notifier actor owns the registrations, kept in ``<dbroot>/notify/`` (one record
per URL) so they survive a restart, and one delivery thread per URL. It subscribes
to every event; each is handed to each URL's bounded queue, and that URL's thread
POSTs them in order, body the event as ``(event (seq N) (time T) (name NAME) (value
V))``, ``Content-Type: application/sxp``. An event that fails ``ATTEMPTS`` times, or
finds the queue full, is dropped for that URL and logged; a receiver that must not
miss one catches up with ``GET /xend/event/?since=N``.

xend only posts where ``xend-hosts-allow`` would let a client in: plain http, to an IP
address or ``localhost``; names are not looked up, so what was checked is what is
contacted.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
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
    """One URL's thread: POSTs its events in order, each a few times at most."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._queue: queue.Queue[Event | None] = queue.Queue(QUEUE_SIZE)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"notify {url}", daemon=True)
        self._thread.start()

    def offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("Notify %s: %d events waiting, event %d (%s) dropped",
                        self.url, QUEUE_SIZE, event.seq, event.name)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        # trust_env=False: a proxy from the environment must not see events for loopback.
        with httpx.Client(timeout=POST_TIMEOUT, trust_env=False,
                          headers={"Content-Type": sxp.MIME_TYPE}) as http:
            while not self._stopping.is_set():
                event = self._queue.get()
                if event is not None:
                    self._post(http, event)
        if not self._queue.empty():
            log.info("Notify %s: stopped with %d events not sent", self.url, self._queue.qsize())

    def _post(self, http: httpx.Client, event: Event) -> None:
        body = sxp.show(event.record())
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt and self._stopping.wait(BACKOFF * 2 ** (attempt - 1)):
                return
            try:
                reply = http.post(self.url, content=body)
            except httpx.HTTPError as error:
                problem = str(error) or type(error).__name__
                continue
            if reply.is_success:
                return
            problem = f"HTTP {reply.status_code} {reply.reason_phrase}"
        log.warning("Notify %s: event %d (%s) dropped after %d attempts: %s",
                    self.url, event.seq, event.name, ATTEMPTS, problem)


def _key(url: str) -> str:
    """The store key of a URL: URLs hold characters a file name may not."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def _url_of(record: sxp.Value) -> str | None:
    url = sxp.child_value(record, "url")
    return url if isinstance(url, str) else None
