"""The event bus: xend's events, numbered, kept in a bounded log and fanned out.

The EventBus actor owns the subscriptions, the event sequence and the event log.
Publishing is a `tell` (fire and forget) and so is delivery: a subscriber is
anything with a ``tell(message)`` method (a pykka ActorRef, or a queue for a thread
that is not an actor), so a slow subscriber can never block the bus or the publisher.

Every event gets the next sequence number and goes into the log (``log.py``). The
bus writes in batches (a group commit): the first event published after a commit sends
the bus a ``_Commit`` message, which comes after every message already in its inbox,
so a burst of events costs one write and one fsync. An event is delivered to
subscribers, and readable with ``since``, only once it is on disk. Hence a client that
resumes from the last number it saw neither misses nor sees again an event, across a
stop, a ``kill -9`` or a power cut: a number that nobody could see may be reused.

Subscriptions take the patterns of ``event.matches``.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.events.event import Event, matches
from xend_actors.events.log import KEEP, EventLog
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000  # events a QueueSubscriber holds before it drops


class Subscriber(Protocol):
    """Whatever can receive an event without blocking the sender."""

    def tell(self, message: Event) -> None: ...


@dataclass
class QueueSubscriber:
    """A subscriber for plain threads (HTTP long-polls, debug-port connections).

    The queue is bounded and the bus must never wait on it: when it is full, an event
    is dropped and counted in ``dropped``; the log still has it (``EventBus.since``).
    """

    events: queue.Queue[Event] = field(default_factory=lambda: queue.Queue(QUEUE_SIZE))
    dropped: int = 0

    def tell(self, message: Event) -> None:
        try:
            self.events.put_nowait(message)
        except queue.Full:
            self.dropped += 1


@dataclass(frozen=True)
class _Commit:
    """The bus's note to itself: write and deliver the events published so far."""


class EventBus(TracedActor):
    """Numbers every published event, logs it, then tells it to each matching subscriber.

    With ``log_path`` the numbering continues after the last event in that file.
    """

    def __init__(self, log_path: Path | None = None, keep: int = KEEP) -> None:
        super().__init__()
        self._subscriptions: list[tuple[str, Subscriber]] = []
        self._log = EventLog(log_path, keep)
        self._seq = self._log.last_seq
        self._pending: list[Event] = []
        self._shown: list[str] = []  # the pending events' records, shown for the log

    def publish(self, name: str, value: sxp.Value) -> None:
        self._seq += 1
        event = Event(self._seq, name, value, time.time())
        shown = sxp.show(value)
        if name.startswith("xend."):
            log.info("EVENT> %s %s", name, shown)
        if not self._pending:
            self.actor_ref.tell(_Commit())
        self._pending.append(event)
        self._shown.append(event.record_shown(shown))

    def subscribe(self, subscriber: Subscriber, *patterns: str) -> None:
        """Replace ``subscriber``'s subscriptions with ``patterns``."""
        self.unsubscribe(subscriber)
        self._subscriptions.extend((pattern, subscriber) for pattern in patterns)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscriptions = [(p, s) for p, s in self._subscriptions if s is not subscriber]

    def last_seq(self) -> int:
        """The number of the last event published."""
        return self._seq

    def written(self) -> None:
        """Answers once every event published before the ask is in the log (or counted
        unwritten, on a full disk): a destroy answers after its ``died`` is durable, so
        a xend killed just after its reply still tells it."""
        self._commit()

    def unwritten(self) -> int:
        """How many events are kept in memory only, since the disk refused them."""
        return self._log.unwritten

    def since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Up to ``limit`` delivered events numbered after ``seq``, oldest first.

        Only the last ``KEEP`` events are kept: a first number above ``seq + 1`` tells
        the caller that older ones are gone.
        """
        return self._log.since(seq, limit)

    def on_receive(self, message: object) -> object:
        if isinstance(message, _Commit):
            self._commit()
            return None
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._commit()
        self._log.close()

    def _commit(self) -> None:
        events, self._pending = self._pending, []
        shown, self._shown = self._shown, []
        if not events:
            return
        try:
            self._log.append(events, shown)
        except OSError as error:
            # Delivering anyway keeps xend working; these numbers may come again later.
            log.error("Cannot write the event log %s: %s", self._log.path, error)
        for event in events:
            for pattern, subscriber in list(self._subscriptions):
                if matches(pattern, event.name):
                    self._deliver(subscriber, event)

    def _deliver(self, subscriber: Subscriber, event: Event) -> None:
        try:
            subscriber.tell(event)
        except pykka.ActorDeadError:
            self.unsubscribe(subscriber)


class EventBusProxy(ActorMemberMixin, pykka.ActorProxy[EventBus]):
    publish = proxy_method(EventBus.publish)
    subscribe = proxy_method(EventBus.subscribe)
    unsubscribe = proxy_method(EventBus.unsubscribe)
    last_seq = proxy_method(EventBus.last_seq)
    since = proxy_method(EventBus.since)
    unwritten = proxy_method(EventBus.unwritten)
    written = proxy_method(EventBus.written)
