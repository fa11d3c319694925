"""The event bus: xend's events, numbered and fanned out to their subscribers.

The EventBus actor owns the subscriptions and the event sequence. Publishing is a
`tell` (fire and forget) and so is delivery: a subscriber is anything with a
``tell(message)`` method (a pykka ActorRef, or a queue for a thread that is not an
actor), so a slow subscriber can never block the bus or the publisher.

Patterns follow the original EventServer (facts §11.1): an exact name ``a.b.c``;
``a.b.?`` for exactly one more component; ``a.b.*`` for ``a.b`` and anything below
it; ``*`` for everything.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Protocol

import pykka

from xend_actors import sxp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One event as delivered: its sequence number, name, SXP value and Unix time."""

    seq: int
    name: str
    value: sxp.Value
    time: float

    def sxpr(self) -> sxp.Value:
        """The event as the debug port prints it: ``(event NAME VALUE)``."""
        return ["event", self.name, self.value]


class Subscriber(Protocol):
    """Whatever can receive an event without blocking the sender."""

    def tell(self, message: Event) -> None: ...


def matches(pattern: str, name: str) -> bool:
    """Whether the event ``name`` matches the subscription ``pattern``."""
    if pattern in ("*", name):
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        return name == prefix or name.startswith(prefix + ".")
    if pattern.endswith(".?"):
        prefix = pattern[:-1]
        rest = name[len(prefix) :]
        return name.startswith(prefix) and bool(rest) and "." not in rest
    return False


@dataclass
class QueueSubscriber:
    """A subscriber for plain threads (HTTP long-polls, debug-port connections)."""

    events: queue.Queue[Event] = field(default_factory=queue.Queue)

    def tell(self, message: Event) -> None:
        self.events.put(message)


class EventBus(pykka.ThreadingActor):
    """Numbers every published event and tells it to each matching subscriber."""

    def __init__(self) -> None:
        super().__init__()
        self._subscriptions: list[tuple[str, Subscriber]] = []
        self._seq = 0

    def publish(self, name: str, value: sxp.Value) -> None:
        self._seq += 1
        event = Event(self._seq, name, value, time.time())
        if name.startswith("xend."):
            log.info("EVENT> %s %s", name, sxp.show(value))
        for pattern, subscriber in list(self._subscriptions):
            if matches(pattern, name):
                self._deliver(subscriber, event)

    def subscribe(self, subscriber: Subscriber, *patterns: str) -> None:
        """Replace ``subscriber``'s subscriptions with ``patterns``."""
        self.unsubscribe(subscriber)
        self._subscriptions.extend((pattern, subscriber) for pattern in patterns)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscriptions = [(p, s) for p, s in self._subscriptions if s is not subscriber]

    def last_seq(self) -> int:
        return self._seq

    def _deliver(self, subscriber: Subscriber, event: Event) -> None:
        try:
            subscriber.tell(event)
        except pykka.ActorDeadError:
            self.unsubscribe(subscriber)
