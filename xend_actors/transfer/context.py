"""What every transfer session shares (``Context``), and how a session keeps its record
in the store's ``migrate/`` folder and tells its events.

The Transfer actor makes one Context; each TransferSession actor gets it. In it: the
driver, the DomainTable and event bus proxies, the ``migrate/`` folder, the session
numbers, ``Moving`` (``moving.py``), which refuses a second transfer of a domain
while one runs, and the ``Dialer`` a migration out connects with (``xfr/tls.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from xend_actors.domain.table import DomainTableProxy
from xend_actors.errors import XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.hypervisor.base import Driver
from xend_actors.store import RecordDir
from xend_actors.transfer import records
from xend_actors.transfer.moving import Moving
from xend_actors.transfer.records import MigrateRecord, SaveRecord, SessionRecord
from xend_actors.transfer.xfr.tls import Dialer


@dataclass(frozen=True)
class Context:
    driver: Driver
    table: DomainTableProxy
    events: EventBusProxy
    sessions: RecordDir
    ids: Iterator[int]
    moving: Moving = field(default_factory=Moving)
    dialer: Dialer = field(default_factory=Dialer)  # plain TCP, without a config

    def session_id(self) -> str:
        """The key of a new session."""
        return str(next(self.ids))

    def keep(self, record: SessionRecord) -> None:
        """Keep ``record`` in the store while its transfer runs (``drop`` ends it)."""
        self.sessions.write(record.id, records.to_sxpr(record))

    def announce(self, event: str, name: str, domid: int,
                 record: SaveRecord | MigrateRecord) -> None:
        """Keep ``record`` and publish it: ``(NAME ID STATE RECORD)``."""
        value = records.to_sxpr(record)
        self.sessions.write(record.id, value)
        self.events.publish(event, [name, str(domid), record.state.value, value])

    def drop(self, record: SessionRecord) -> None:
        self.sessions.delete(record.id)


def first_session_id(sessions: RecordDir) -> int:
    """The number after the highest session recorded in ``sessions``."""
    keys = sessions.keys()  # a RecordDir's, not a dict's
    return 1 + max((int(k) for k in keys if k.isdigit()), default=0)


def failed(what: str, error: Exception) -> XendError:
    """A session's failure as its caller sees it: ``save failed: why``."""
    if isinstance(error, XendError):
        return XendError(f"{what} failed: {error.message}", status=error.status)
    return XendError(f"{what} failed: {error}")
