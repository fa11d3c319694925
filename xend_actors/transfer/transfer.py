"""The Transfer actor (the original's xfrd): where save, restore and migration out begin.

Each transfer asked of it runs in a TransferSession actor of its own (``session.py``),
started by ``session()``, so transfers of different domains run side by side and xend
keeps serving meanwhile. The sessions share one ``Context``; it refuses a second
transfer of a domain while one runs (409).

This actor keeps what outlives a session: a xend that starts again after dying
mid-transfer puts back what a session left in the store's ``migrate/`` folder
(``_recover``, the records read by ``records.py``). It supervises the sessions: one
that a bug ended tells it what it left (``session_failed``), which it puts back the
same way at once, then frees the names the session held. The Relocation actor
(``relocation.py``), which takes migrations in when ``xend-relocation-server`` is on,
is started and stopped by it. None of the DomainTable or Domain actors ever asks it.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.actors import ASK_TIMEOUT, ask, proxy_of
from xend_actors.config import XendConfig
from xend_actors.domain.table import DomainTableProxy
from xend_actors.errors import XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.hypervisor.base import Driver
from xend_actors.store import RecordDir, is_partial_of
from xend_actors.trace import TracedActor
from xend_actors.transfer import records, rollback
from xend_actors.transfer.context import Context, Leftovers, first_session_id
from xend_actors.transfer.drivers import movable
from xend_actors.transfer.records import (
    Destination,
    MigrateRecord,
    RestoreRecord,
    SaveRecord,
    SessionState,
)
from xend_actors.transfer.xfr import tls

if TYPE_CHECKING:
    from xend_actors.transfer.relocation import Relocation
    from xend_actors.transfer.session import TransferSessionProxy

log = logging.getLogger(__name__)


class Transfer(TracedActor):
    def __init__(self, driver: Driver, table: DomainTableProxy, events: EventBusProxy,
                 sessions: RecordDir, config: XendConfig | None = None) -> None:
        super().__init__()
        self._driver = driver
        self._table = table
        self._events = events
        self._sessions = sessions
        self._config = config
        self._relocation: pykka.ActorRef[Relocation] | None = None
        self._context = Context(driver, table, events, sessions,
                                itertools.count(first_session_id(sessions)),
                                dialer=tls.Dialer() if config is None else tls.dialer(config))

    def on_start(self) -> None:
        self._recover()

    def on_stop(self) -> None:
        if self._relocation is not None:
            self._relocation.stop(block=True, timeout=ASK_TIMEOUT)

    def start_relocation(self) -> str:
        """Listen for migrations in if ``xend-relocation-server`` is on; where, or ''.
        A driver that moves no domain state cannot (501)."""
        if self._config is None or not self._config.relocation_server:
            return ""
        # Here and in session: what moves a domain is loaded when one first moves.
        from xend_actors.transfer.relocation import Incoming, Relocation, RelocationProxy

        incoming = Incoming(movable(self._driver, "migration"), self._table, self._sessions,
                            self._context.moving,
                            proxy_of(self.actor_ref, TransferProxy).session_failed)
        self._relocation = Relocation.start(self._config, incoming)
        return ask(proxy_of(self._relocation, RelocationProxy).address())

    def _recover(self) -> None:
        """Sessions left by a xend that stopped mid-transfer: a domain suspended for a save
        or a migration out runs on (it would have been destroyed had it got away), one
        handed over is destroyed, one whose whole state went unanswered stays paused (it
        may run at the destination); one half-migrated in, or half-restored, is
        destroyed."""
        for key, value in self._sessions.load_all().items():
            self._put_back_session(key, value)

    def session_failed(self, left: Leftovers) -> None:
        """A session (or a migration in) a bug ended left ``left``: put back what its
        records say, as a restarted xend would, then free the names it held."""
        for key in left.records:
            value = self._sessions.read(key)
            if value is not None:
                self._put_back_session(key, value)
        for name in left.names:
            self._context.moving.release(name)

    def _put_back_session(self, key: str, value: sxp.Value) -> None:
        try:
            self._put_back(records.from_sxpr(value))
        except ValueError as error:
            log.error("Transfer session %s cannot be put back: %s", key, error)
        log.warning("Transfer session %s was interrupted: %s", key, sxp.show(value))
        self._sessions.delete(key)

    def _put_back(self, record: records.SessionRecord) -> None:
        match record:
            case SaveRecord(domid=domid, paused=paused):
                _remove_partial(record)
                rollback.resume(self._driver, domid, bool(paused))
                self._show(domid)
            case RestoreRecord(domid=int(domid)):
                # made, not yet running (a stream driver's before its state came)
                rollback.discard(self._driver, self._table, domid)
            case MigrateRecord(dst=dst) if record.incoming:
                if dst.domid is not None:
                    rollback.discard(self._driver, self._table, dst.domid)
            case MigrateRecord(state=SessionState.COMMIT, src=src, dst=Destination(domid=None)):
                # its whole state went, no word back: it may run at the destination
                log.error("Domain %s stays paused: its migration to %s was cut off once "
                          "all of its state had gone; unpause it only if it does not run "
                          "there", src.domid, record.dst.host)
            case MigrateRecord(state=SessionState.COMMIT, src=src):
                # handed over: it runs at the destination
                rollback.discard(self._driver, self._table, src.domid)
            case MigrateRecord(src=src, paused=paused):
                rollback.resume(self._driver, src.domid, bool(paused))
                self._show(src.domid)

    def _show(self, domid: int) -> None:
        """The table shows a domain put back running before xend says it has started,
        not at the driver's notification, which a client's first listing may beat."""
        try:
            ask(self._table.state_changed(self._driver.domain(domid)), "the domain table")
        except (XendError, pykka.ActorDeadError) as error:
            log.warning("Domain %s put back, but not shown so: %s", domid, error)

    def ping(self) -> str:
        """For the start-up barrier: the actor runs."""
        return "transfer"

    def session(self) -> TransferSessionProxy:
        """A new TransferSession actor for one save, restore or migration; the caller
        stops it when that is done."""
        from xend_actors.transfer.session import TransferSession, TransferSessionProxy

        supervisor = proxy_of(self.actor_ref, TransferProxy)
        return proxy_of(TransferSession.start(self._context, supervisor.session_failed),
                        TransferSessionProxy)


def _remove_partial(record: SaveRecord) -> None:
    """The half-written image of a save that was cut off, if the record names one."""
    if record.partial is None or not is_partial_of(Path(record.partial), Path(record.file)):
        return
    try:
        Path(record.partial).unlink(missing_ok=True)
    except OSError as error:
        log.warning("Cannot remove the half-written save file %s: %s", record.partial, error)


class TransferProxy(ActorMemberMixin, pykka.ActorProxy[Transfer]):
    start_relocation = proxy_method(Transfer.start_relocation)
    ping = proxy_method(Transfer.ping)
    session = proxy_method(Transfer.session)
    session_failed = proxy_method(Transfer.session_failed)
