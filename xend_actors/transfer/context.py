"""What every transfer session shares (``Context``), and how a session keeps its record
in the store's ``migrate/`` folder, holds names, tells its events and bounds its waits.

The Transfer actor makes one Context; each TransferSession actor gets its own copy
(``for_session``) sharing the driver, the DomainTable and event bus proxies, the
``migrate/`` folder, the session numbers, ``Moving`` (``moving.py``), which refuses a
second transfer of a domain while one runs, and the ``Dialer`` a migration out connects
with (``xfr/tls.py``). Its own are the request's ``Deadline`` and what it holds now:
the records it keeps and the names it holds. A session that ends on a bug leaves both
(``Leftovers``) for the Transfer actor to put back, as a restarted xend would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from xend_actors.actors import ASK_TIMEOUT, Deadline, is_bug, within
from xend_actors.domain.table import DomainTableProxy
from xend_actors.errors import XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.hypervisor.base import Driver
from xend_actors.store import RecordDir
from xend_actors.transfer import records
from xend_actors.transfer.moving import Moving
from xend_actors.transfer.records import MigrateRecord, SaveRecord, SessionRecord
from xend_actors.transfer.xfr.tls import Dialer

STREAM_TIMEOUT = 30.0  # the most the hypervisor or the peer may take to move the next bytes
MIN_WAIT = 0.01  # seconds


@dataclass(frozen=True)
class Leftovers:
    """What a session that died held: its records' keys and the names it held."""

    records: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class Context:
    driver: Driver
    table: DomainTableProxy
    events: EventBusProxy
    sessions: RecordDir
    ids: Iterator[int]
    moving: Moving = field(default_factory=Moving)
    dialer: Dialer = field(default_factory=Dialer)  # plain TCP, without a config
    deadline: Deadline | None = None  # the request's; None: outside any (ASK_TIMEOUT)
    kept: set[str] = field(default_factory=set)  # this session's records in the store
    held: set[str] = field(default_factory=set)  # and the names it holds

    def for_session(self, deadline: Deadline | None = None) -> Context:
        """This context as one session's: its request's deadline, nothing held yet."""
        return replace(self, deadline=deadline, kept=set(), held=set())

    def inner(self, cap: float = ASK_TIMEOUT) -> Deadline:
        """The deadline of one wait of this session: at most ``cap`` seconds, and over
        before the request's own (``Deadline.inner``) while the request waits. Once the
        request was answered (504: the transfer goes on, as it said), each wait has its
        ``cap``."""
        return within(self.deadline, cap)

    def seconds(self, cap: float) -> float:
        """``inner(cap)`` as seconds for a socket or a join: never 0 (non-blocking)."""
        return max(self.inner(cap).remaining(), MIN_WAIT)

    def leftovers(self) -> Leftovers:
        return Leftovers(tuple(sorted(self.kept)), tuple(sorted(self.held)))

    @contextlib.contextmanager
    def holding(self, name: str, doing: str) -> Iterator[None]:
        """Domain ``name`` held (``Moving``) while ``doing`` it inside; a bug leaves it
        held for the Transfer actor to release once it put back what the session left."""
        self.moving.take(name, doing)
        self.held.add(name)
        try:
            yield
        except BaseException as error:
            if not is_bug(error):
                self.release(name)
            raise
        self.release(name)

    def release(self, name: str) -> None:
        self.held.discard(name)
        self.moving.release(name)

    def session_id(self) -> str:
        """The key of a new session."""
        return str(next(self.ids))

    def keep(self, record: SessionRecord) -> None:
        """Keep ``record`` in the store while its transfer runs (``drop`` ends it),
        fsynced only if it is ``records.durable``."""
        self.kept.add(record.id)
        self.sessions.write(record.id, records.to_sxpr(record), sync=records.durable(record))

    def announce(self, event: str, name: str, domid: int,
                 record: SaveRecord | MigrateRecord) -> None:
        """Keep ``record`` and publish it: ``(NAME ID STATE RECORD)``."""
        self.keep(record)
        self.events.publish(event, [name, str(domid), record.state.value,
                                    records.told(record)])

    def conclude(self, event: str, name: str, domid: int, record: SaveRecord | MigrateRecord,
                 *, keep: bool = False) -> None:
        """End ``record``'s session: drop it, unless ``keep`` (a bug ended it: the Transfer
        actor puts back what it said last), and publish its last state (ok or error).
        That state is told, not written: the record would go at once, and a xend that
        died in between would put back the same from the state before. So a full disk,
        which refuses a write but not a delete, leaves no session behind."""
        if not keep:
            self.drop(record)
        self.events.publish(event, [name, str(domid), record.state.value,
                                    records.told(record)])

    def drop(self, record: SessionRecord) -> None:
        self.sessions.delete(record.id, sync=records.durable(record))
        self.kept.discard(record.id)

    @contextlib.contextmanager
    def dropped_after(self, record: SessionRecord) -> Iterator[None]:
        """``record`` dropped once the work inside ends, unless a bug ended it: then it
        stays, for the Transfer actor to put back what it says."""
        try:
            yield
        except BaseException as error:
            if not is_bug(error):
                self.drop(record)
            raise
        self.drop(record)


def first_session_id(sessions: RecordDir) -> int:
    """The number after the highest session recorded in ``sessions``."""
    keys = sessions.keys()  # a RecordDir's, not a dict's
    return 1 + max((int(k) for k in keys if k.isdigit()), default=0)


def failed(what: str, error: Exception, left: Callable[[], str] | None = None) -> Exception:
    """A session's failure as its caller sees it: ``save failed: why``, and for a wait
    that ran out of time (504) where it ``left()`` the domain; a bug as it is, for the
    session to crash on."""
    if is_bug(error):
        return error
    if isinstance(error, XendError):
        where = f"; {left()}" if left is not None and error.status == 504 else ""
        return XendError(f"{what} failed: {error.message}{where}", status=error.status)
    return XendError(f"{what} failed: {error}")
