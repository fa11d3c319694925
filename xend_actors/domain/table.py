"""The DomainTable actor: which domains exist (the original XendDomain).

It owns the set of domains and their names, and keeps each domain's latest record
(told by its Domain actor) beside the hypervisor's latest snapshot. It publishes them
whole after each message that changed a domain (``domain/view.py``), so the web reads a
domain's info, the names and every info without asking it; events a read would
contradict go out through it (``announce``), after the snapshot that shows them. It never calls the
driver: snapshots and new domains come from the Hypervisor actor, and everything that
acts on one domain (building, destroying, restarting) is that domain's Domain actor's.

It reaps: the driver's notification (Xen's VIRQ_DOM_EXC) triggers a look at the
domains that changed, and a listing refreshes as in the original; a dead domain's
Domain actor is told ``exited`` and takes it from there (facts §7.3), telling the table
that it is ``finishing`` and then ``settled`` (restarted) or ``gone``. It adopts domains
it has no record of (under the name the hypervisor's domain carries), and on start
recovers every domain from the store (facts §7.5, §7.6).

No nameless orphans: a new domain (created, restored, migrated in) is first an intent,
``intent/<key>`` in the store holding its name and config, written before the hypervisor
is asked; it is dropped once the domain's record is written with its start time (or the
domain is gone). A xend killed in between finds the intent on its next start: a domain
of that name fully recorded is kept, a half-made one is destroyed. A name is unique
across the table, the intents and the hypervisor's own list.

It supervises its Domain actors: one that failed (``actors.Supervised``) tells
``domain_failed``, and a new one is started from the domain's store record (the table's
latest if the store has none), given back its devices and console if the domain is
alive, and handed to the reaper again, which carries on whatever the failed one left
half done (a dead domain is reaped; a vanished one forgotten). When the hypervisor's
helper process dies (``hypervisor_lost``) the reaper waits; once a new one runs
(``hypervisor_restarted``) every domain the helper took with it has crashed, and its
Domain actor applies its restart rules.

Decisions on the original's quirks (facts §15):
- Suspended domains are never reaped; they belong to save and migrate (kept).
- A domain destroyed by xend emits ``destroy`` and then ``died`` at once, rather
  than on a later refresh.
- Domain-0 is the host: shutting it down, pausing or destroying it is refused.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import ASK_TIMEOUT, Deadline, ask, proxy_of
from xend_actors.console.hub import ConsolesProxy
from xend_actors.device.info import DeviceInfo
from xend_actors.domain.config import DomainConfig
from xend_actors.domain.domain import Domain, DomainProxy, DomainServices
from xend_actors.domain.names import LocalNames, NameClaims
from xend_actors.domain.record import DomainInfo, DomainRecord, RestartState, from_sxpr
from xend_actors.domain.view import (
    HOST_REFUSAL,
    READING_AGE,
    Listed,
    Snapshot,
    TableView,
    unknown_domain,
)
from xend_actors.errors import Conflict, NotFound, XendError
from xend_actors.hypervisor.actor import HypervisorProxy
from xend_actors.hypervisor.base import HvDomain, ShutdownReason
from xend_actors.hypervisor.ring.messages import Message
from xend_actors.layered import Layered
from xend_actors.limits import no_room_for_domain
from xend_actors.store import RecordDir, StoreError
from xend_actors.sxp import Value, child_value
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

SAFETY_REFRESH_SECONDS = 5.0  # in case a notification is ever lost
LISTING_REFRESH_SECONDS = 0.5  # a listing refreshes unless the table just did
ALL = -1  # domain_changed(ALL): look at every domain, not one

T = TypeVar("T")


@dataclass
class _Entry:
    """The table's view of one domain (private, mutable, owned by the table thread)."""

    domain: DomainProxy
    record: DomainRecord
    hv: HvDomain | None = None
    suspended_reported: bool = False
    finishing: bool = False  # its Domain actor is destroying it: the reaper keeps off

    @property
    def booting(self) -> bool:
        return self.record.restart_state is RestartState.BOOTING


class DomainTable(TracedActor):
    def __init__(self, hypervisor: HypervisorProxy, consoles: ConsolesProxy,
                 services: DomainServices, intents: RecordDir | None = None,
                 claims: NameClaims | None = None) -> None:
        super().__init__()
        self._hypervisor = hypervisor
        self._consoles = consoles
        self._services = services
        self._records: RecordDir = services.records
        self._intents = intents  # None: new domains are not recorded before they exist
        self._intended: set[str] = set()  # names of domains being made, not yet recorded
        self._claims: NameClaims = claims or LocalNames()  # who else must agree to a name
        self._events = services.events
        self._clock: Callable[[], float] = services.clock
        self._entries: dict[int, _Entry] = {}
        # Each name's domain id; published (``_name``) as ``_by_name``, which each
        # snapshot shares uncopied, and the table looks names up in too.
        self._names: dict[str, int] = {}
        self._by_name: Layered[str, int] = Layered()
        self._changed: set[int] = set()  # domains the driver said changed, not yet looked at
        self._last_refresh = -LISTING_REFRESH_SECONDS
        self._stopping = threading.Event()
        self._hv_lost = False  # the hypervisor's helper died: nothing to reap until back
        # What the web reads without asking: the entries' records and readings, swapped
        # in whole (``_publish``) at the end of each message that changed any.
        self._listed: dict[int, Listed] = {}
        self._published: Layered[int, Listed] = Layered()  # _listed, as last published
        self._dirty: set[int] = set()  # domains changed since the last snapshot
        # Domains handed over to another host, out of the listing, which their Domain
        # actors are destroying here: the reaper leaves them alone until ``gone``.
        self._handed_over: dict[int, _Entry] = {}

    def on_start(self) -> None:
        self._self = proxy_of(self.actor_ref, DomainTableProxy)
        self._view = TableView(self._ask(self._consoles.view()), self._clock)
        threading.Thread(target=self._safety_refresh, name="refresh", daemon=True).start()

    def on_stop(self) -> None:
        self._stopping.set()
        for entry in [*self._entries.values(), *self._handed_over.values()]:
            entry.domain.actor_ref.stop(block=False)

    def _safety_refresh(self) -> None:
        """Look at every domain now and then, in case a notification is lost; about every
        ``READING_AGE`` s while the web reads the domains, so their cpu_time moves."""
        last = time.monotonic()
        while not self._stopping.wait(READING_AGE):
            now = time.monotonic()
            if now - last < SAFETY_REFRESH_SECONDS and not self._view.read_lately(READING_AGE):
                continue
            last = now
            try:
                self._self.domain_changed(ALL)
            except pykka.ActorDeadError:
                return

    # --- the snapshot the web reads ---------------------------------------------------

    def view(self) -> TableView:
        """The view the web reads domains from without asking this actor."""
        return self._view

    def sync(self) -> None:
        """Answers once all that was told to the table before is in its snapshot: the web
        asks it after a change, so the client's next read sees the change."""
        self._publish()

    def announce(self, name: str, value: Value, reading: HvDomain | None = None,
                 record: DomainRecord | None = None) -> None:
        """Publish a Domain's event once the snapshot shows what it says (told after
        the change, so anyone who hears it and reads finds the domain as it says);
        ``reading``: the hypervisor's since the change, taken in first (``state_changed``),
        after ``record``, the Domain's new record (``record_changed``, in the same
        snapshot)."""
        if record is not None:
            self._take_record(record)
        if reading is not None:
            self.state_changed(reading)
        self._publish()
        self._events.publish(name, value)

    def _mark(self, domid: int) -> None:
        self._dirty.add(domid)

    def _publish(self) -> None:
        """Swap in a new snapshot if any domain changed since the last."""
        if not self._dirty:
            return
        for domid in self._dirty:
            entry = self._entries.get(domid)
            before = self._listed.get(domid)
            if entry is None:
                self._listed.pop(domid, None)
            elif before is not None and before.record is entry.record and \
                    before.domain is entry.domain:
                self._listed[domid] = before.moved(entry.hv)
            else:
                self._listed[domid] = Listed(entry.record, entry.hv, entry.domain)
        # Its changes layered on the last (never changed under a reader), not a copy.
        self._published = self._published.updated(self._listed, self._dirty)
        self._dirty.clear()
        self._view.publish(Snapshot(self._published, self._by_name))

    # --- start-up ---------------------------------------------------------------------

    def recover(self) -> int:
        """Bring back every domain from the store; adopt the rest. Returns how many."""
        hv = {d.domid: d for d in self._ask(self._hypervisor.list_domains())}
        records = self._records.load_all()
        self._finish_intents(hv, records)
        parsed = []
        for key, value in records.items():
            try:
                parsed.append((key, from_sxpr(value)))
            except XendError as error:
                log.warning("Store record domain/%s is unusable (%s); dropped", key, error)
                self._records.delete(key)
        # The domains the hypervisor has first: they hold their names, and a domain that
        # was to restart gives way to one made under its name meanwhile.
        parsed.sort(key=lambda item: item[1].domid not in hv)
        for key, record in parsed:
            if record.domid not in hv and record.name in self._by_name:
                log.warning("Domain %s (id %s) was to restart, but domain %s has its name; "
                            "record dropped", record.name, record.domid,
                            self._by_name.get(record.name))
                self._records.delete(key)
                self._events.publish("xend.domain.died", [record.name, str(record.domid)])
                continue
            if record.restart_state is RestartState.BOOTING and record.domid in hv:
                # xend died while rebuilding it: throw the half-built domain away, retry.
                self._ask(self._hypervisor.destroy(record.domid))
                del hv[record.domid]
            if record.domid in hv or record.restart_state is not None:
                entry = self._add(record, hv.get(record.domid))
                if entry.hv is not None:
                    entry.finishing = record.ending  # its Domain finishes destroying it
                    self._ask(entry.domain.recover())
                log.info("Recovered domain %s (id %s)", record.name, record.domid)
            else:
                # It ended while no xend watched: said now, as its Domain would have.
                log.info("Domain %s (id %s) is gone; record dropped", record.name, record.domid)
                self._records.delete(key)
                self._events.publish("xend.domain.died", [record.name, str(record.domid)])
        self._reap(hv)
        for entry in list(self._entries.values()):
            if entry.hv is None and entry.record.restart_state is not None:
                # its restart was interrupted: no minimum restart time to wait for
                entry.finishing = True
                entry.domain.restart()
        self._publish()
        return len(self._entries)

    def _finish_intents(self, hv: dict[int, HvDomain], records: dict[str, Value]) -> None:
        """Finish or roll back the new domains a killed xend left half made: one whose
        record was written with its start time is kept; any other domain of the intended
        name is destroyed, with its record."""
        if self._intents is None:
            return
        for key, intent in self._intents.load_all().items():
            name = str(child_value(intent, "name", ""))
            for domid in [d.domid for d in hv.values() if d.name == name and d.domid != 0]:
                record = records.get(str(domid))
                if record is not None and child_value(record, "start_time") is not None:
                    log.info("Domain %s (id %s) was made before xend stopped; kept",
                             name, domid)
                    continue
                log.warning("Domain %s (id %s) was half made when xend stopped; destroyed",
                            name, domid)
                self._ask(self._hypervisor.destroy(domid))
                del hv[domid]
                if records.pop(str(domid), None) is not None:
                    self._records.delete(str(domid))
            self._intents.delete(key)

    # --- queries -----------------------------------------------------------------------

    def names(self, deadline: Deadline | None = None) -> list[str]:
        self._refresh_for_listing(deadline)
        return [entry.record.name for entry in self._entries.values()]

    def infos(self, deadline: Deadline | None = None) -> list[DomainInfo]:
        self._refresh_for_listing(deadline)
        now = self._clock()
        consoles = self._ask(self._consoles.of_domains(), deadline)
        return [DomainInfo(e.record, e.hv, consoles.get(domid), now)
                for domid, e in self._entries.items()]

    def info(self, dom: str, deadline: Deadline | None = None) -> DomainInfo:
        """One domain's info, its hypervisor state read now rather than at the last refresh."""
        entry = self._lookup(dom)
        if not entry.booting:
            hv = self._ask(self._hypervisor.domain(entry.record.domid), deadline) or entry.hv
            if hv != entry.hv:
                entry.hv = hv
                self._mark(entry.record.domid)
                self._publish()
        console = self._ask(self._consoles.of_domain(entry.record.domid), deadline)
        return DomainInfo(entry.record, entry.hv, console, self._clock())

    def devices(self, dom: str) -> tuple[DeviceInfo, ...]:
        """The devices attached to ``dom`` now, as its Domain last told."""
        return self._lookup(dom).record.devices

    def find(self, dom: str, *, guest_only: bool = False) -> DomainProxy:
        """The Domain actor of ``dom`` (a name, else an id); ``guest_only`` refuses Domain-0."""
        entry = self._lookup(dom)
        if guest_only and entry.record.domid == 0:
            raise Conflict(HOST_REFUSAL)
        return entry.domain

    def _lookup(self, dom: str) -> _Entry:
        domid = self._by_name.get(dom)
        if domid is None and dom.isdigit():
            domid = int(dom)
        entry = self._entries.get(domid) if domid is not None else None
        if entry is None:
            raise unknown_domain(dom)
        return entry

    # --- new domains -----------------------------------------------------------------------

    def create(self, config: DomainConfig) -> DomainProxy:
        """An empty paused domain with its Domain actor; the caller then asks it to build."""
        for warning in config.warnings:
            log.warning("Domain %s: %s", config.name, warning)
        try:
            self.intend(config)
        except XendError as error:
            raise _creating(error) from None
        try:
            # Given the image, a qemu starts making the machine now, while the domain is
            # recorded and its actor started: a create's longest wait, overlapped.
            domid = self._ask(self._hypervisor.create(config.name, config.memory_mb,
                                                      cpu=config.cpu,
                                                      image=config.image.image()))
        except XendError as error:
            self.unintend(config.name)
            raise _creating(error) from None
        log.info("Created domain %s (id %s)", config.name, domid)
        entry = self._add(DomainRecord(domid, config.name, config), None)
        self._publish()
        return entry.domain

    def intend(self, config: DomainConfig, peer: str | None = None) -> None:
        """Hold ``config.name`` for a domain about to be made (created, restored, migrated
        in from ``peer``) and record the intent before the hypervisor is asked; Conflict
        if the name is taken here, in the hypervisor or (in a pool) by another member,
        StoreError if the disk will not take it, 503 if xend may not open the files or
        threads one more domain needs (``limits``) or the pool cannot be asked."""
        name = config.name
        full = no_room_for_domain(len(self._entries) + len(self._intended))
        if full is not None:
            raise XendError(f"no room for domain {name}: {full}", status=503)
        held = name in self._by_name or name in self._intended or \
            self._ask(self._hypervisor.name_taken(name))
        if held:
            raise Conflict(f"vm name clash: {name}")
        self._claims.claim(config, peer)
        if self._intents is not None:
            try:
                self._intents.write(_intent_key(name),
                                    ["intent", ["name", name], ["config", config.sxpr]])
            except BaseException:
                self._claims.release(name)
                raise
        self._intended.add(name)

    def unintend(self, name: str, made: bool = False) -> None:
        """The domain intended as ``name`` is recorded (``made``), or was never made: drop
        the intent, and in the second case its name's claim."""
        if name not in self._intended:
            return
        self._intended.discard(name)
        if not made:
            self._claims.release(name)
        if self._intents is not None:
            self._intents.delete(_intent_key(name))

    def take_in(self, domid: int, name: str) -> DomainProxy:
        """The Domain actor of ``domid``, made outside the table (restored or migrated in)
        as ``name``: adopted now, with only that domain looked at."""
        entry = self._entries.get(domid)
        if entry is None:
            hv = self._ask(self._hypervisor.domain(domid))
            if hv is None:
                raise NotFound(f"no domain {domid}")
            entry = self._adopt(hv, name)
        self._publish()
        return entry.domain

    def _add(self, record: DomainRecord, hv: HvDomain | None) -> _Entry:
        domain = proxy_of(Domain.start(record, self._self, self._services), DomainProxy)
        entry = self._entries[record.domid] = _Entry(domain, record, hv)
        self._name(record.name, record.domid)
        self._mark(record.domid)
        return entry

    def _name(self, name: str, domid: int | None, old: str | None = None) -> None:
        """``name`` is ``domid``'s from now (None: nobody's), and ``old`` no longer is."""
        names = self._names
        changed = [name]
        if old is not None and names.get(old) == domid:
            del names[old]
            changed.append(old)
        if domid is None:
            names.pop(name, None)
        else:
            names[name] = domid
        self._by_name = self._by_name.updated(names, changed)

    def _adopt(self, hv: HvDomain, name: str = "") -> _Entry:
        """A domain the table had no record of, under ``name``, else the name its hypervisor
        domain carries, else (that name taken or none) ``Domain-<id>``."""
        name = name or hv.name
        if not name or name in self._by_name:
            name = f"Domain-{hv.domid}"
        record = DomainRecord(hv.domid, name)
        log.info("Adopting domain %s (id %s)", record.name, record.domid)
        entry = self._add(record, hv)
        self._publish()  # before its create event
        try:
            self._ask(entry.domain.save())
        except StoreError as error:  # a full disk: the domain is served all the same
            log.warning("Domain %s is adopted without a record: %s; it is written with "
                        "its next change", record.name, error.message)
        self._events.publish("xend.domain.create", [record.name, str(record.domid)])
        return entry

    def _drop(self, entry: _Entry) -> None:
        """Forget the entry, and its intent if it never got as far as its record (a failed
        build whose domain the reaper saw vanish before its Domain said ``gone``)."""
        self._entries.pop(entry.record.domid, None)
        if self._by_name.get(entry.record.name) == entry.record.domid:
            self._name(entry.record.name, None)
        self._mark(entry.record.domid)
        if entry.record.name in self._intended:
            self.unintend(entry.record.name)
        else:  # gone for good, or moved away (its claim then no longer ours to release)
            self._claims.release(entry.record.name)

    # --- told by Domain actors and the hypervisor -----------------------------------------

    def record_changed(self, record: DomainRecord) -> None:
        self._take_record(record)
        self._publish()

    def _take_record(self, record: DomainRecord) -> None:
        entry = self._entries.get(record.domid)
        if entry is None:
            return
        if record.start_time is not None:  # its record is written: made for good
            self.unintend(record.name, made=True)
        if entry.record.name != record.name:  # configured with its own name
            self._name(record.name, record.domid, old=entry.record.name)
        entry.record = record
        self._mark(record.domid)

    def finishing(self, domid: int) -> None:
        """Its Domain actor is destroying the domain; it tells ``settled`` or ``gone``."""
        entry = self._entries.get(domid)
        if entry is not None:
            entry.finishing = True
            entry.hv = None
            self._mark(domid)
            self._publish()

    def settled(self, domid: int, hv: HvDomain | None = None) -> None:
        """The domain was restarted (``hv``: the hypervisor's reading of it since): it is
        the reaper's again."""
        entry = self._entries.get(domid)
        if entry is not None:
            entry.finishing = entry.suspended_reported = False
            if hv is not None:
                entry.hv = hv
                self._mark(domid)
                self._publish()

    def state_changed(self, hv: HvDomain) -> None:
        """A Domain changed its domain in the hypervisor (paused it, set its memory):
        ``hv`` is the reading since, shown at once rather than at the driver's
        notification (which a reply to the change may beat)."""
        self._reap({hv.domid: hv}, {hv.domid})

    def handed_over(self, domid: int) -> None:
        """Domain ``domid`` runs on another host now (migrated away): out of the listing
        and its name free at once, while its Domain actor destroys what is left of it
        here (it says ``gone`` once done)."""
        entry = self._entries.get(domid)
        if entry is not None:
            entry.finishing = True
            self._drop(entry)
            self._handed_over[domid] = entry
            self._publish()

    def gone(self, domid: int) -> None:
        """A Domain forgot its domain (destroyed, or its build or restart failed)."""
        self._handed_over.pop(domid, None)
        entry = self._entries.get(domid)
        if entry is not None:
            self._drop(entry)
            self._publish()

    def domain_failed(self, domid: int, failed: pykka.ActorRef[Domain]) -> None:
        """``domid``'s Domain actor ``failed`` (and is stopped): start its successor from
        the store, then let the reaper look at the domain."""
        entry = self._entries.get(domid)
        if entry is None or entry.domain.actor_ref != failed:
            return  # forgotten meanwhile, or already replaced
        try:
            stored = self._records.read(str(domid))
            record = entry.record if stored is None else from_sxpr(stored)
        except XendError as error:
            log.warning("Domain %s: store record unusable (%s); restarting from the table's",
                        entry.record.name, error)
            record = entry.record
        if record.restart_state is RestartState.BOOTING:
            record = replace(record, restart_state=RestartState.PENDING)  # rebuild it anew
        entry.record, entry.finishing = record, False
        self._mark(domid)
        entry.domain = proxy_of(Domain.start(record, self._self, self._services), DomainProxy)
        log.info("Restarted the actor of domain %s (id %s) from its record", record.name,
                 domid)
        hv = self._ask(self._hypervisor.domain(domid))
        if hv is not None and not hv.state.dead:
            entry.finishing = record.ending  # its Domain finishes destroying it
            entry.domain.recover()  # its devices and console back; nobody waits on it
        elif record.restart_state is not None:
            entry.finishing = True
            entry.domain.restart()
        self._publish()
        self._self.domain_changed(domid)

    def hypervisor_lost(self) -> None:
        self._hv_lost = True

    def hypervisor_restarted(self) -> None:
        """A new hypervisor helper runs: the domains the old one had crashed with it."""
        self._hv_lost = False
        hv = {d.domid: d for d in self._ask(self._hypervisor.list_domains())}
        for domid, entry in list(self._entries.items()):
            # Every one, whatever it was doing: one whose restart was pending or whose
            # destroy the lost connection broke off would otherwise wait forever. Its
            # Domain actor knows whether it is still at it (``crashed_with_hypervisor``).
            if domid != 0 and domid not in hv:
                entry.finishing, entry.hv = True, None
                self._mark(domid)
                entry.domain.crashed_with_hypervisor()
        self._reap(hv)

    def guest_message(self, domid: int, message: Message) -> None:
        """A guest's control message (its frontends' requests): to its Domain actor."""
        entry = self._entries.get(domid)
        if entry is not None:
            entry.domain.guest_message(message)

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
            snapshot = self._ask(self._hypervisor.domain(domid))
            if snapshot is not None:
                hv[domid] = snapshot
        self._reap(hv, changed)

    def refresh(self, deadline: Deadline | None = None) -> None:
        """Look at every domain the hypervisor has."""
        self._last_refresh = time.monotonic()
        self._reap({d.domid: d for d in self._ask(self._hypervisor.list_domains(), deadline)})

    def _refresh_for_listing(self, deadline: Deadline | None) -> None:
        """The original refreshed on every listing; the driver's notifications keep the
        table current now, so a listing right after a refresh need not pay for another."""
        if time.monotonic() - self._last_refresh > LISTING_REFRESH_SECONDS:
            self.refresh(deadline)

    # --- reaping ---------------------------------------------------------------------------

    def _reap(self, hv: dict[int, HvDomain], domids: set[int] | None = None) -> None:
        """Bring the table in line with the hypervisor's ``hv`` for ``domids`` (None: all):
        adopt strangers, forget the vanished, hand the dead to their Domain (facts §7.3)."""
        if self._hv_lost:
            return
        try:
            self._reap_all(hv, domids)
        finally:
            self._publish()

    def _reap_all(self, hv: dict[int, HvDomain], domids: set[int] | None) -> None:
        for domid in (set(self._entries) | set(hv)) if domids is None else domids:
            entry, snapshot = self._entries.get(domid), hv.get(domid)
            if entry is None:
                # one being made (restored, migrated in) is taken in by its maker; one
                # handed over is its Domain actor's to destroy
                if snapshot is not None and snapshot.name not in self._intended and \
                        domid not in self._handed_over:
                    self._adopt(snapshot)
                continue
            if entry.finishing or entry.booting:
                continue  # its Domain actor is at it
            if entry.hv != snapshot:
                entry.hv = snapshot
                self._mark(domid)
            if snapshot is None and entry.record.restart_state is None:
                self._drop(entry)
                entry.domain.forget()
            elif snapshot is not None and snapshot.state.dead:
                self._reap_one(entry, snapshot)

    def _reap_one(self, entry: _Entry, hv: HvDomain) -> None:
        """Hand one dead domain to its Domain actor (a suspended one is only reported)."""
        if hv.state.shutdown and hv.shutdown_reason is ShutdownReason.SUSPEND:
            if not entry.suspended_reported:
                entry.suspended_reported = True
                entry.domain.suspended()
            return
        reason = ShutdownReason.CRASH if hv.state.crashed else (
            hv.shutdown_reason or ShutdownReason.POWEROFF)
        entry.finishing = True
        entry.domain.exited(reason)

    @staticmethod
    def _ask(future: pykka.Future[T], deadline: Deadline | None = None) -> T:
        """``future``'s answer within the asker's deadline (the inner one), else within
        ``ASK_TIMEOUT`` (start-up, the reaper)."""
        return ask(future, "the hypervisor or a domain",
                   ASK_TIMEOUT if deadline is None else deadline.inner())


def _creating(error: XendError) -> XendError:
    """``error`` as a create's failure, of the same kind (its status kept)."""
    return type(error)(f"Error creating domain: {error.message}", status=error.status)


def _intent_key(name: str) -> str:
    """A store key for the intent of ``name`` (a name may hold what a key may not)."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


class DomainTableProxy(ActorMemberMixin, pykka.ActorProxy[DomainTable]):
    """The DomainTable, as its Domain actors, the web and transfers reach it."""

    recover = proxy_method(DomainTable.recover)
    names = proxy_method(DomainTable.names)
    infos = proxy_method(DomainTable.infos)
    info = proxy_method(DomainTable.info)
    devices = proxy_method(DomainTable.devices)
    find = proxy_method(DomainTable.find)
    create = proxy_method(DomainTable.create)
    intend = proxy_method(DomainTable.intend)
    unintend = proxy_method(DomainTable.unintend)
    take_in = proxy_method(DomainTable.take_in)
    record_changed = proxy_method(DomainTable.record_changed)
    finishing = proxy_method(DomainTable.finishing)
    handed_over = proxy_method(DomainTable.handed_over)
    settled = proxy_method(DomainTable.settled)
    state_changed = proxy_method(DomainTable.state_changed)
    view = proxy_method(DomainTable.view)
    sync = proxy_method(DomainTable.sync)
    announce = proxy_method(DomainTable.announce)
    gone = proxy_method(DomainTable.gone)
    domain_failed = proxy_method(DomainTable.domain_failed)
    hypervisor_lost = proxy_method(DomainTable.hypervisor_lost)
    hypervisor_restarted = proxy_method(DomainTable.hypervisor_restarted)
    guest_message = proxy_method(DomainTable.guest_message)
    domain_changed = proxy_method(DomainTable.domain_changed)
    look_again = proxy_method(DomainTable.look_again)
    refresh = proxy_method(DomainTable.refresh)
