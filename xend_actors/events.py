"""The event bus: xend's events, numbered, kept in a bounded log and fanned out.

The EventBus actor owns the subscriptions, the event sequence and the event log.
Publishing is a `tell` (fire and forget) and so is delivery: a subscriber is
anything with a ``tell(message)`` method (a pykka ActorRef, or a queue for a thread
that is not an actor), so a slow subscriber can never block the bus or the publisher.

Every event gets the next sequence number and goes into the log, ``<dbroot>/events``:
one ``(event (seq N) (time T) (name NAME) (value V))`` line per event, appended, and
rewritten atomically to the last ``keep`` events when it has grown to twice that.
The bus writes in batches (a group commit): the first event published after a commit
sends the bus a ``_Commit`` message, which comes after every message already in its
inbox, so a burst of events costs one write and one fsync. An event is delivered to
subscribers, and readable with ``since``, only once it is on disk. Hence a client that
resumes from the last number it saw neither misses nor sees again an event, across a
stop, a ``kill -9`` or a power cut: a number that nobody could see may be reused.

Patterns follow the original EventServer (facts §11.1): an exact name ``a.b.c``;
``a.b.?`` for exactly one more component; ``a.b.*`` for ``a.b`` and anything below
it; ``*`` for everything.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import pykka

from xend_actors import sxp
from xend_actors.store import atomic_write
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

KEEP = 10_000  # events kept in the log, and in memory for ``since``
KEEP_BYTES = 8 << 20  # ... and at most this many bytes of them (injected events can be big)
QUEUE_SIZE = 1000  # events a QueueSubscriber holds before it drops


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

    def record(self) -> sxp.Value:
        """The event with its number and time, as the log, HTTP and notify URLs carry it."""
        return ["event", ["seq", str(self.seq)], ["time", repr(self.time)],
                ["name", self.name], ["value", self.value]]

    @classmethod
    def from_record(cls, record: sxp.Value) -> Event:
        """The event of a ``record()``; ValueError if it is not one."""
        if sxp.name(record) != "event":
            raise ValueError("not an (event ...) record")
        name, value = sxp.child_value(record, "name"), sxp.child(record, "value")
        if not isinstance(name, str) or not isinstance(value, list) or len(value) != 2:
            raise ValueError("an event record needs (name NAME) and (value V)")
        return cls(int(sxp.child_value(record, "seq", "")), name, value[1],
                   float(sxp.child_value(record, "time", "")))


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


class EventLog:
    """The last events in memory and, given a path, in an append-only file.

    Both hold at most ``keep`` events and ``keep_bytes`` of records (the newest event
    always stays). On opening, the file is read, unreadable lines are skipped, and it
    is rewritten, so that a line torn by a crash never has another glued to it; after
    a failed write the next append rewrites it for the same reason.
    """

    def __init__(self, path: Path | None = None, keep: int = KEEP,
                 keep_bytes: int = KEEP_BYTES) -> None:
        self.path = path
        self.keep = keep
        self.keep_bytes = keep_bytes
        self._events: deque[tuple[Event, bytes]] = deque()
        self._bytes = 0
        self._file: BinaryIO | None = None
        self._file_lines = self._file_bytes = 0
        if path is not None:
            self._load(path)
            self._rewrite(path)

    @property
    def last_seq(self) -> int:
        return self._events[-1][0].seq if self._events else 0

    def append(self, events: list[Event]) -> None:
        """Add ``events`` (numbered after ``last_seq``) and make them durable."""
        lines = [(sxp.show(event.record()) + "\n").encode() for event in events]
        for event, line in zip(events, lines, strict=True):
            self._remember(event, line)
        if self.path is None:
            return
        try:
            if self._file is None:
                self._rewrite(self.path)
                return
            data = b"".join(lines)
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file_lines += len(lines)
            self._file_bytes += len(data)
            if self._file_lines > 2 * self.keep or self._file_bytes > 2 * self.keep_bytes:
                self._rewrite(self.path)
        except OSError:
            self.close()
            raise

    def since(self, seq: int, limit: int) -> list[Event]:
        """The first ``limit`` events numbered after ``seq`` that are still kept."""
        newer = []
        for event, _line in reversed(self._events):
            if event.seq <= seq:
                break
            newer.append(event)
        return newer[::-1][:limit]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _remember(self, event: Event, line: bytes) -> None:
        self._events.append((event, line))
        self._bytes += len(line)
        while len(self._events) > 1 and (
            len(self._events) > self.keep or self._bytes > self.keep_bytes
        ):
            self._bytes -= len(self._events.popleft()[1])

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        skipped = 0
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                event = Event.from_record(sxp.parse(line, max_size=len(line)))
            except (sxp.ParseError, ValueError):
                skipped += 1
                continue
            if event.seq <= self.last_seq:
                skipped += 1
                continue
            self._remember(event, line + b"\n")
        if skipped:
            log.warning("Event log %s: %d unreadable lines skipped", path, skipped)

    def _rewrite(self, path: Path) -> None:
        """Replace the file with the events kept, atomically, and append to it from now."""
        data = b"".join(line for _event, line in self._events)
        atomic_write(path, data)
        self.close()
        self._file = path.open("ab")
        self._file_lines, self._file_bytes = len(self._events), len(data)


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

    def publish(self, name: str, value: sxp.Value) -> None:
        self._seq += 1
        event = Event(self._seq, name, value, time.time())
        if name.startswith("xend."):
            log.info("EVENT> %s %s", name, sxp.show(value))
        if not self._pending:
            self.actor_ref.tell(_Commit())
        self._pending.append(event)

    def subscribe(self, subscriber: Subscriber, *patterns: str) -> None:
        """Replace ``subscriber``'s subscriptions with ``patterns``."""
        self.unsubscribe(subscriber)
        self._subscriptions.extend((pattern, subscriber) for pattern in patterns)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscriptions = [(p, s) for p, s in self._subscriptions if s is not subscriber]

    def last_seq(self) -> int:
        """The number of the last event published."""
        return self._seq

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
        if not events:
            return
        try:
            self._log.append(events)
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
