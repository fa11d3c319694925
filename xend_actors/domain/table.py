"""The DomainTable actor: which domains exist (the original XendDomain).

It owns the set of domains and their names, and keeps each domain's latest record
(told by its Domain actor) beside the hypervisor's latest snapshot, so listing a
thousand domains is one hypervisor call and no actor round trips. It reaps: the
driver's notification (Xen's VIRQ_DOM_EXC) triggers a refresh, and a refresh on
listing stays as in the original; a dead domain is handled per facts §7.3 and its
restart mode (``restart.py``). It adopts domains it has no record of, and on start
recovers every domain from the store (facts §7.5, §7.6).

Decisions on the original's quirks (facts §15):
- Suspended domains are never reaped; they belong to save and migrate (kept).
- A domain destroyed by xend emits ``destroy`` and then ``died`` at once, rather
  than on a later refresh.
- Domain-0 is the host: shutting it down, pausing or destroying it is refused.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pykka

from xend_actors import sxp
from xend_actors.config import XendConfig
from xend_actors.console.info import ConsoleInfo
from xend_actors.device.info import DeviceInfo
from xend_actors.domain.config import DomainConfig
from xend_actors.domain.domain import DeviceServices, Domain
from xend_actors.domain.record import (
    DomainRecord,
    RestartState,
    from_sxpr,
    info_sxpr,
)
from xend_actors.domain.restart import restart_wanted, restarting_too_fast
from xend_actors.errors import BadRequest, Conflict, NotFound, XendError
from xend_actors.hypervisor.base import Driver, HvDomain, ShutdownReason
from xend_actors.hypervisor.ring.messages import Message
from xend_actors.store import Store
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

SAFETY_REFRESH_SECONDS = 5.0  # in case a notification is ever lost
LISTING_REFRESH_SECONDS = 0.5  # a listing refreshes unless the table just did
ALL = -1  # domain_changed(ALL): look at every domain, not one
ASK_TIMEOUT = 30.0
DESTROY_REASONS = {"halt": ShutdownReason.HALT, "reboot": ShutdownReason.REBOOT}


@dataclass
class _Entry:
    """The table's view of one domain (private, mutable, owned by the table thread)."""

    domain: pykka.ActorProxy
    record: DomainRecord
    hv: HvDomain | None = None
    suspended_reported: bool = False


class DomainTable(TracedActor):
    def __init__(self, config: XendConfig, driver: Driver, events: pykka.ActorProxy,
                 store: Store, consoles: pykka.ActorProxy, devices: DeviceServices,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self._devices = devices
        self._driver = driver
        self._events = events
        self._consoles = consoles
        self._store = store
        self._clock = clock
        self._entries: dict[int, _Entry] = {}
        self._changed: set[int] = set()  # domains the driver said changed, not yet looked at
        self._last_refresh = -LISTING_REFRESH_SECONDS
        self._stopping = threading.Event()

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()
        threading.Thread(target=self._safety_refresh, name="refresh", daemon=True).start()

    def on_stop(self) -> None:
        self._stopping.set()
        for entry in self._entries.values():
            entry.domain.actor_ref.stop(block=False)

    def _safety_refresh(self) -> None:
        while not self._stopping.wait(SAFETY_REFRESH_SECONDS):
            try:
                self._self.domain_changed(ALL)
            except pykka.ActorDeadError:
                return

    # --- start-up ---------------------------------------------------------------------

    def recover(self) -> int:
        """Bring back every domain from the store; adopt the rest. Returns how many."""
        hv = {d.domid: d for d in self._driver.list_domains()}
        for key, value in self._store.domain.load_all().items():
            try:
                record = from_sxpr(value)
            except XendError as error:
                log.warning("Store record domain/%s is unusable (%s); dropped", key, error)
                self._store.domain.delete(key)
                continue
            if record.restart_state is RestartState.BOOTING and record.domid in hv:
                # xend died while rebuilding it: throw the half-built domain away, retry.
                self._driver.destroy(record.domid)
                del hv[record.domid]
            if record.domid in hv or record.restart_state is not None:
                entry = self._add(record, hv.get(record.domid))
                if entry.hv is not None:
                    self._ask(entry.domain.recover())
                log.info("Recovered domain %s (id %s)", record.name, record.domid)
            else:
                log.info("Domain %s (id %s) is gone; record dropped", record.name, record.domid)
                self._store.domain.delete(key)
        self._reap(hv)
        for entry in list(self._entries.values()):
            if entry.hv is None and entry.record.restart_state is not None:
                self._restart(entry, interrupted=True)
        return len(self._entries)

    # --- queries -----------------------------------------------------------------------

    def names(self) -> list[str]:
        self._refresh_for_listing()
        return [entry.record.name for entry in self._entries.values()]

    def infos(self) -> list[sxp.Value]:
        self._refresh_for_listing()
        now = self._clock()
        consoles = self._ask(self._consoles.of_domains())
        return [info_sxpr(e.record, e.hv, now, _sxpr(consoles.get(domid)))
                for domid, e in self._entries.items()]

    def info(self, dom: str) -> sxp.Value:
        """One domain's info, its hypervisor state read now rather than at the last refresh."""
        entry = self._lookup(dom)
        if entry.record.restart_state is not RestartState.BOOTING:
            with contextlib.suppress(NotFound):
                entry.hv = self._driver.domain(entry.record.domid)
        console = self._ask(self._consoles.of_domain(entry.record.domid))
        return info_sxpr(entry.record, entry.hv, self._clock(), _sxpr(console))

    def devices(self, dom: str) -> tuple[DeviceInfo, ...]:
        """The devices attached to ``dom`` now, as its Domain last told."""
        return self._lookup(dom).record.devices

    def find(self, dom: str, *, guest_only: bool = False) -> pykka.ActorProxy:
        """The Domain actor of ``dom`` (a name, else an id); ``guest_only`` refuses Domain-0."""
        entry = self._lookup(dom)
        if guest_only:
            _refuse_host(entry)
        return entry.domain

    def _lookup(self, dom: str) -> _Entry:
        for entry in self._entries.values():
            if entry.record.name == dom:
                return entry
        if dom.isdigit() and int(dom) in self._entries:
            return self._entries[int(dom)]
        raise NotFound(f"invalid domain:{dom}")

    # --- creating and destroying ---------------------------------------------------------

    def create(self, config: DomainConfig) -> pykka.ActorProxy:
        """An empty paused domain with its Domain actor; the caller then asks it to build."""
        for warning in config.warnings:
            log.warning("Domain %s: %s", config.name, warning)
        if any(e.record.name == config.name for e in self._entries.values()):
            raise Conflict(f"Error creating domain: vm name clash: {config.name}")
        try:
            domid = self._driver.create(config.name, config.memory_mb, cpu=config.cpu)
        except XendError as error:
            raise XendError(f"Error creating domain: {error.message}",
                            status=error.status) from None
        log.info("Created domain %s (id %s)", config.name, domid)
        return self._add(DomainRecord(domid, config.name, config), None).domain

    def take_in(self, domid: int, name: str) -> pykka.ActorProxy:
        """The Domain actor of ``domid``, made outside the table (restored or migrated in)
        as ``name``: adopted now, with only that domain looked at."""
        entry = self._entries.get(domid)
        if entry is None:
            entry = self._adopt(self._driver.domain(domid), name)
        return entry.domain

    def destroy(self, dom: str, word: str) -> None:
        reason = DESTROY_REASONS.get(word)
        if reason is None:
            raise BadRequest(f"invalid reason:{word}")
        entry = self._lookup(dom)
        _refuse_host(entry)
        entry.record = self._ask(entry.domain.note_destroy(reason))
        self._final_destroy(entry)

    def _add(self, record: DomainRecord, hv: HvDomain | None) -> _Entry:
        domain = Domain.start(record, driver=self._driver, events=self._events,
                              consoles=self._consoles, table=self._self, records=self._store.domain,
                              devices=self._devices, clock=self._clock).proxy()
        entry = self._entries[record.domid] = _Entry(domain, record, hv)
        return entry

    def _final_destroy(self, entry: _Entry) -> None:
        """Destroy in the hypervisor, then restart or forget (facts §7.2)."""
        record = entry.record
        log.info("Destroying domain: name=%s", record.name)
        self._events.publish("xend.domain.destroy", [record.name, str(record.domid)])
        with contextlib.suppress(XendError):  # the destroy below says what is wrong
            self._driver.destroying(record.domid)
        self._ask(entry.domain.release())
        with contextlib.suppress(NotFound):  # already gone is what we wanted
            self._driver.destroy(record.domid)
        entry.hv = None
        if record.restart_state is RestartState.PENDING:
            self._restart(entry)
        else:
            self._drop(entry)

    def _restart(self, entry: _Entry, *, interrupted: bool = False) -> None:
        record = entry.record
        if not interrupted and restarting_too_fast(record.restart_time, self._clock(),
                                                   self.config.minimum_restart_time):
            log.error("VM %s restarting too fast", record.name)
            self._events.publish("xend.domain.restart", [record.name, str(record.domid), "fail"])
            self._drop(entry)
            return
        log.info("Scheduling restart for domain: name=%s id=%s", record.name, record.domid)
        entry.domain.restart()

    def _drop(self, entry: _Entry) -> None:
        record = entry.record
        del self._entries[record.domid]
        self._ask(entry.domain.forget())  # the record is gone before anyone is answered
        self._events.publish("xend.domain.died", [record.name, str(record.domid)])

    # --- told by Domain actors and the hypervisor -----------------------------------------

    def record_changed(self, record: DomainRecord) -> None:
        entry = self._entries.get(record.domid)
        if entry is not None:
            entry.record = record

    def guest_message(self, domid: int, message: Message) -> None:
        """A guest's control message (its frontends' requests): to its Domain actor."""
        entry = self._entries.get(domid)
        if entry is not None:
            entry.domain.guest_message(message)

    def forget(self, domid: int) -> None:
        """A Domain gave up (its build or restart failed); it has cleaned up after itself."""
        self._entries.pop(domid, None)

    def domain_changed(self, domid: int) -> None:
        """The driver says ``domid`` changed (``ALL``: look at every domain); a burst of
        changes is coalesced into one look at just those domains."""
        if not self._changed:
            self._self.look_again()
        self._changed.add(domid)

    def look_again(self) -> None:
        changed, self._changed = self._changed, set()
        if ALL in changed:
            self.refresh()
            return
        hv = {}
        for domid in changed:
            with contextlib.suppress(NotFound):
                hv[domid] = self._driver.domain(domid)
        self._reap(hv, changed)

    def refresh(self) -> None:
        """Look at every domain the hypervisor has."""
        self._last_refresh = time.monotonic()
        self._reap({d.domid: d for d in self._driver.list_domains()})

    def _refresh_for_listing(self) -> None:
        """The original refreshed on every listing; the driver's notifications keep the
        table current now, so a listing right after a refresh need not pay for another."""
        if time.monotonic() - self._last_refresh > LISTING_REFRESH_SECONDS:
            self.refresh()

    # --- reaping ---------------------------------------------------------------------------

    def _reap(self, hv: dict[int, HvDomain], domids: set[int] | None = None) -> None:
        """Bring the table in line with the hypervisor's ``hv`` for ``domids`` (None: all):
        adopt strangers, drop the vanished, handle the dead (facts §7.3)."""
        reaped = False
        for domid in (set(self._entries) | set(hv)) if domids is None else domids:
            entry, snapshot = self._entries.get(domid), hv.get(domid)
            if entry is None:
                if snapshot is not None:
                    self._adopt(snapshot)
                continue
            entry.hv = snapshot
            booting = entry.record.restart_state is RestartState.BOOTING
            if snapshot is None and not booting and entry.record.restart_state is None:
                self._drop(entry)
            elif snapshot is not None and snapshot.state.dead and not booting:
                reaped = self._reap_one(entry) or reaped
        if reaped:  # as the original: what a reap destroyed is confirmed by a fresh look
            self.domain_changed(ALL)

    def _reap_one(self, entry: _Entry) -> bool:
        """Handle one dead domain; whether it was destroyed (a suspended one is not)."""
        hv = entry.hv
        assert hv is not None
        if hv.state.shutdown and hv.shutdown_reason is ShutdownReason.SUSPEND:
            if not entry.suspended_reported:
                entry.suspended_reported = True
                self._ask(entry.domain.suspended())
            return False
        reason = ShutdownReason.CRASH if hv.state.crashed else (
            hv.shutdown_reason or ShutdownReason.POWEROFF)
        config = entry.record.config
        restart = config is not None and restart_wanted(config.restart, reason,
                                                        entry.record.shutdown_request)
        entry.record = self._ask(entry.domain.exited(reason, restart))
        self._final_destroy(entry)
        return True

    def _adopt(self, hv: HvDomain, name: str = "") -> _Entry:
        record = DomainRecord(hv.domid, name or f"Domain-{hv.domid}")
        log.info("Adopting domain %s (id %s)", record.name, record.domid)
        entry = self._add(record, hv)
        self._ask(entry.domain.save())
        self._events.publish("xend.domain.create", [record.name, str(record.domid)])
        return entry

    @staticmethod
    def _ask(future: pykka.Future):  # type: ignore[no-untyped-def]
        return future.get(timeout=ASK_TIMEOUT)


def _sxpr(console: ConsoleInfo | None) -> sxp.Value | None:
    return console.sxpr() if console is not None else None


def _refuse_host(entry: _Entry) -> None:
    if entry.record.domid == 0:
        raise Conflict("Domain-0 is the host: it cannot be paused, shut down or destroyed")
