"""The PoolMember actor: this xend's membership of its pool.

It joins (a lease of ``xend-pool-ttl`` seconds, and ``hosts/<me>`` under it: where this
xend's API is, its certificate's fingerprint, its room), renews the lease on a thread
of its own, and keeps ``domains/<name>`` current for every domain here: each event of
the bus marks the summaries stale, and they are written a moment later, only those
that changed, each guarded by the claim being ours. A lease that expired (etcd was
gone longer than the TTL) is joined again, and every join reconciles: each domain here
claims its name (one whose name another member holds now was moved while we were away,
if it is an HA domain, and is destroyed here; else the clash is logged), each claim of
ours with no domain here is released, or restarted here if it is an HA domain's, and
every summary is written again.

When etcd cannot be reached, nothing here stops: the domains run and are managed as
ever, the pool's operations answer 503, and the member joins again once etcd answers.
Except the HA domains: the fence (``fence.py``) destroys them once the lease may be
about to expire, since another member will restart them then (``ha.py``). A clean stop
does the same before it revokes the lease: the others restart them at once.

The fencing watchdog (``watchdog_client.py``) is the backstop for a xend that cannot
fence (killed, hung): each renewal that worked, and each join, pushes its deadline to
``WATCHDOG_SHARE`` of the TTL after they were sent; each join tells it the whole set of
HA names to guard, and reports what it fenced while xend was away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import ASK_TIMEOUT, ask, proxy_of
from xend_actors.domain.table import DomainTableProxy
from xend_actors.domain.view import Listed, TableView
from xend_actors.errors import XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.events.event import Event
from xend_actors.hypervisor.actor import HypervisorProxy
from xend_actors.hypervisor.base import ShutdownReason
from xend_actors.pool.entries import DomainEntry, HostEntry, Keys
from xend_actors.pool.etcd import Compare, Etcd, PoolUnavailable, put
from xend_actors.pool.fence import Fence
from xend_actors.pool.ha import HaRestarts
from xend_actors.pool.names import EtcdNames
from xend_actors.pool.watchdog_client import WatchdogUnavailable, take_fenced
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

PUBLISH_DELAY = 0.05  # seconds: the events of one burst are written together
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
RETRY_PERIOD = 0.5  # seconds between tries of a renewal or a join that failed
# The watchdog's deadline, as a share of the TTL after the last renewal sent: past the
# member's own fence (half the TTL, ``fence.py``), which goes first while xend lives
# (through its domains' actors), and well before the lease can expire.
WATCHDOG_SHARE = 0.6


@dataclass(frozen=True)
class Membership:
    """Who this member is in which pool, and what it tells the others about itself."""

    keys: Keys
    me: str
    api: str  # the URL other members reach this xend's API at
    fingerprint: str  # of the API's TLS certificate; '' for plain HTTP
    ttl: float
    relocation: str = ""  # host:port migrations to this member go to; '' none
    build_timeout: float = 120.0  # seconds an HA restart has to make its domain
    destroy_timeout: float = 30.0  # seconds the fence waits for each domain's end
    run_dir: Path = Path("/var/run/xend")  # where the fencing watchdog records its fences


class PoolMember(TracedActor):
    def __init__(self, membership: Membership, etcd: Etcd, names: EtcdNames,
                 table: DomainTableProxy, view: TableView,
                 hypervisor: HypervisorProxy, events: EventBusProxy) -> None:
        super().__init__()
        self._membership = membership
        self._keys = membership.keys
        self._me = membership.me
        self._etcd = etcd
        self._names = names
        self._table = table
        self._view = view
        self._hypervisor = hypervisor
        self._events = events
        self._lease = 0  # 0: not joined (or the lease expired)
        self._stale_lease = 0  # a lease given up (fenced), to revoke at the next join
        self._joined = 0.0
        self._unjoined = ""  # why the last join failed, logged once
        self._published: dict[str, DomainEntry] = {}  # what etcd holds of ours, we believe
        self._host: HostEntry | None = None  # what hosts/<me> holds
        self._publishing = False  # a publish is scheduled
        self._stopping = threading.Event()
        self._fence = Fence(membership.ttl, self._fence_now)
        self._fenced: list[str] = []  # the names the last fence destroyed
        self._reporting = threading.Lock()  # the watchdog's fences taken by one thread
        self._ha = HaRestarts(etcd, self._keys, self._me, membership.ttl, names, table,
                              view, events, self._fence, membership.build_timeout,
                              self.is_joined)

    def on_start(self) -> None:
        self._self = proxy_of(self.actor_ref, PoolMemberProxy)
        self._fence.start()
        self._start_watchdog()
        self._ha.start()
        threading.Thread(target=self._keep_alive, name="pool-lease", daemon=True).start()

    def on_stop(self) -> None:
        """Stopped: by ``leave_pool`` first when xend stops; without it when Root
        restarts its actors, whose next member joins again under the same name (the
        lease runs on meanwhile, and the watchdog fences if none comes in time)."""
        self._stopping.set()
        self._ha.stop()
        self._names.watchdog.close()
        self._fence.stop()

    def leave_pool(self) -> None:
        """xend stops: its HA domains are fenced, and the lease revoked, so that the
        others restart them at once (they would, at the lease's expiry, beside copies
        still running here: domains outlive xend)."""
        self._ha.stop()
        # Before the others may take over: at once if the lease is revoked below, at
        # its expiry if etcd does not answer now.
        self._fence.now("this member leaves the pool")
        with contextlib.suppress(WatchdogUnavailable):  # what xend could not destroy
            self._names.watchdog.fence_now()
        self.leave()

    def on_receive(self, message: object) -> object:
        if isinstance(message, Event):  # from the event bus: a domain may have changed
            if not self._publishing:
                self._publishing = True
                timer = threading.Timer(PUBLISH_DELAY, self._self.publish)
                timer.daemon = True
                timer.start()
            return None
        return super().on_receive(message)

    # --- joining ----------------------------------------------------------------------------

    def is_joined(self) -> bool:
        return self._lease != 0

    def join(self) -> bool:
        """Join (again): a new lease, this host registered under it, the reconcile.
        Whether it worked (etcd may be unreachable: then the lease thread tries again)."""
        sent = time.monotonic()
        with self._fence.fencing:  # a fence under way ends first: its domains are gone
            pass
        try:
            lease = self._etcd.grant(self._membership.ttl)
            self._lease = lease
            self._joined = time.time()
            self._host = None
            self._register()
            if self._stale_lease:
                with contextlib.suppress(XendError):  # expired: gone by itself
                    self._etcd.revoke(self._stale_lease)
                self._stale_lease = 0
            self._fence.rejoined(sent)  # before the reconcile: it restarts HA domains
            self._watchdog_renewed(sent)
            self._watchdog_fenced()  # said before the reconcile restarts any of them
            self._reconcile()
            for name in self._fenced:
                self._names.unkeep(name)
            self._fenced = []
        except XendError as error:
            self._lease = 0
            if error.message != self._unjoined:  # not again each try while it lasts
                log.warning("Pool %s: cannot join now (%s); trying again",
                            self._keys.pool, error.message)
            self._unjoined = error.message
            return False
        self._unjoined = ""
        log.info("Pool %s: joined as %s", self._keys.pool, self._me)
        return True

    def lost(self) -> None:
        """The lease expired, or this member is fenced: not a member until the next
        join, which revokes the old lease once ``hosts/<me>`` is under the new one (so
        that after a blip shorter than the TTL the entry never goes)."""
        lease, self._lease = self._lease, 0
        if lease:
            self._stale_lease = lease
            log.warning("Pool %s: %s is no longer a member (%s); joining again",
                        self._keys.pool, self._me, "fenced" if self._fence.fenced
                        else "its lease expired")

    def leave(self) -> None:
        """Leave the pool at a clean stop: the host's entry goes at once."""
        if self._lease:
            try:
                self._etcd.revoke(self._lease)
            except XendError as error:
                log.warning("Pool %s: could not leave (%s)", self._keys.pool, error.message)
            self._lease = 0

    def _register(self) -> None:
        """``hosts/<me>`` as it is now, if it changed."""
        info = ask(self._hypervisor.physinfo(), "the hypervisor", ASK_TIMEOUT)
        domains = sum(1 for listed in self._view.current().by_id.values()
                      if listed.record.domid != 0)
        host = HostEntry(self._me, self._membership.api, self._membership.fingerprint,
                         info.free_memory_mb, info.cores * info.hyperthreads_per_core,
                         domains, round(os.getloadavg()[0], 2), self._joined,
                         self._membership.relocation)
        if host != self._host:
            self._etcd.put(self._keys.host(self._me), host.to_json(), self._lease)
            self._host = host

    def reconcile(self) -> None:
        """etcd made to agree with the domains here again, after it was unreachable."""
        try:
            self._register()
            self._reconcile()
        except XendError as error:
            log.warning("Pool %s: reconcile not done now (%s)", self._keys.pool,
                        error.message)

    def _reconcile(self) -> None:
        """After a join: etcd made to agree with the domains that are here, and the
        watchdog guarding the HA domains here that are ours."""
        keys = self._keys
        local = {listed.record.name: listed for listed in self._view.current().by_id.values()
                 if listed.record.domid != 0}
        claims = {kv.key.removeprefix(keys.names): kv.value.decode("utf-8", "replace")
                  for kv in self._etcd.get_prefix(keys.names)}
        for name, listed in local.items():
            owner = claims.get(name)
            if owner == self._me:
                continue
            config = listed.record.config
            if owner is None and config is not None:
                try:
                    self._names.claim(config)
                except XendError as error:
                    log.warning("Pool %s: domain %s could not claim its name: %s",
                                keys.pool, name, error.message)
            elif owner is not None and config is not None and config.ha:
                self._moved(listed, owner)
            elif owner is not None:
                log.warning("Pool %s: domain %s runs here, but pool member %s holds its "
                            "name", keys.pool, name, owner)
        held = self._names.held()  # claimed by this xend: made, or being made now
        ha = {kv.key.removeprefix(keys.ha) for kv in self._etcd.get_prefix(keys.ha)}
        for name, owner in claims.items():
            if owner != self._me or name in local or name in held or self._ha.busy(name):
                continue
            if name in ha:
                log.info("Pool %s: HA domain %s is ours and not here; restarting it",
                         keys.pool, name)
                self._ha.restart_own(name)
            else:
                log.info("Pool %s: domain %s is no longer here; its claim released",
                         keys.pool, name)
                self._names.release_now(name)
        self._published = {}
        self._write(self._summaries(local.values()))
        self._names.guard_only(
            name for name, listed in local.items() if claims.get(name) == self._me
            and listed.record.config is not None and listed.record.config.ha)

    def _moved(self, listed: Listed, owner: str) -> None:
        """An HA domain here whose claim another member holds: it was restarted there
        while this member was away. Destroyed here, its restart rules aside; its claim
        is not ours to release (the release is guarded: it does nothing)."""
        name = listed.record.name
        log.warning("Pool %s: HA domain %s was restarted on %s while this member was "
                    "away; destroying the copy here", self._keys.pool, name, owner)
        if listed.domain is not None:
            try:
                ask(listed.domain.destroy(ShutdownReason.HALT), f"domain {name}",
                    self._membership.destroy_timeout)
            except XendError as error:
                log.error("Pool %s: the copy of %s here could not be destroyed: %s",
                          self._keys.pool, name, error.message)
                return
        self._events.publish("xend.pool.moved", [name, owner])

    # --- fencing -------------------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        """The fencing watchdog running (found, or started), for when this xend cannot
        fence; one that cannot be started is tried again at each renewal and guard."""
        try:
            self._names.watchdog.start()
        except WatchdogUnavailable as error:
            log.error("Pool %s: %s", self._keys.pool, error.message)

    def _watchdog_renewed(self, sent: float) -> None:
        """The watchdog's deadline pushed on: the lease lives at least the TTL from
        ``sent`` (a renewal's or a grant's)."""
        self._names.watchdog.deadline(self._membership.ttl * WATCHDOG_SHARE, since=sent)

    def _watchdog_fenced(self) -> None:
        """What the watchdog fenced while this xend was away (dead, hung), said once: at
        a join, and at each renewal after (a hung xend may join before the watchdog has
        written down its fence)."""
        with self._reporting:
            fences = take_fenced(self._membership.run_dir)
        for fenced in fences:
            names = [name for name, _domid in fenced.domains]
            log.warning("Pool %s: the fencing watchdog destroyed %s while xend could not "
                        "fence", self._keys.pool, " ".join(names))
            self._events.publish("xend.pool.fenced", [self._me, ["domains", *names],
                                                       ["by", "watchdog"]])

    def _fence_now(self, why: str) -> None:
        """Destroy every HA domain here, restart rules aside, their claims kept; on the
        fence's thread, asking no actor but the domains' own (never this one, which may
        be waiting on etcd)."""
        started = time.monotonic()
        fenced = [listed for listed in self._view.current().by_id.values()
                  if listed.record.domid != 0 and listed.record.config is not None
                  and listed.record.config.ha and listed.domain is not None]
        names = [listed.record.name for listed in fenced]
        self._fenced = names
        log.warning("Pool %s: fencing %s (%s): destroying its HA domains %s",
                    self._keys.pool, self._me, why, " ".join(names) or "(none)")
        for name in names:
            self._names.keep(name)
        destroys = [(listed.record.name, listed.domain.destroy(ShutdownReason.HALT))
                    for listed in fenced if listed.domain is not None]
        timeout = self._membership.destroy_timeout
        for name, destroy in destroys:
            try:
                ask(destroy, f"domain {name}", timeout)
            except (XendError, pykka.ActorDeadError) as error:
                log.error("Pool %s: fencing could not destroy %s: %s", self._keys.pool,
                          name, error)
        # Gone from the table's view: their releases were asked (and skipped) before.
        until = time.monotonic() + timeout
        while any(n in self._view.current().by_name for n in names) and \
                time.monotonic() < until:
            time.sleep(0.02)
        log.warning("Pool %s: %s fenced in %.3f s", self._keys.pool, self._me,
                    time.monotonic() - started)
        self._events.publish("xend.pool.fenced", [self._me, ["domains", *names]])

    # --- publishing --------------------------------------------------------------------------

    def publish(self) -> None:
        """Write the summaries that changed since the last write, and this host's room."""
        self._publishing = False
        if not self._lease:
            return
        try:
            self._register()
            self._write(self._summaries(self._view.current().by_id.values()))
        except XendError as error:
            log.warning("Pool %s: summaries not written now (%s)", self._keys.pool,
                        error.message)

    def _summaries(self, listed: Iterable[Listed]) -> dict[str, DomainEntry]:
        return {entry.name: entry for entry in map(self._summary, listed)
                if entry is not None}

    def _summary(self, listed: Listed) -> DomainEntry | None:
        record, hv = listed.record, listed.hv
        if record.domid == 0:
            return None
        config = record.config
        return DomainEntry(
            record.name, self._me, record.domid, hv.state.letters if hv else "-----",
            hv.memory_kb // 1024 if hv else (config.memory_mb if config else 0),
            hv.vcpus if hv else 1, bool(config and config.ha))

    def _write(self, wanted: dict[str, DomainEntry]) -> None:
        changed = [entry for name, entry in wanted.items()
                   if self._published.get(name) != entry]
        for start in range(0, len(changed), MAX_TXN_OPS // 2):
            batch = changed[start:start + MAX_TXN_OPS // 2]
            if not self._etcd.txn(
                    [Compare(self._keys.name(e.name), "VALUE", self._me) for e in batch],
                    [put(self._keys.domain(e.name), e.to_json()) for e in batch]):
                batch = [e for e in batch if self._write_one(e)]  # some claim is not ours
            self._published.update((e.name, e) for e in batch)
        for name in set(self._published) - set(wanted):
            del self._published[name]  # its release deletes its summary with its claim

    def _write_one(self, entry: DomainEntry) -> bool:
        return self._etcd.txn([Compare(self._keys.name(entry.name), "VALUE", self._me)],
                              [put(self._keys.domain(entry.name), entry.to_json())])

    # --- the lease ----------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        """Renew the lease every fifth of its TTL (sooner after a failure); join when
        not a member. The fence counts from each renewal that worked (``Fence``). After
        etcd was unreachable, the first renewal that works reconciles: what changed here
        meanwhile (a domain destroyed, whose claim could not be released) is told."""
        period = self._membership.ttl / 5
        wait = period
        cut_off = False
        while not self._stopping.wait(wait):
            wait = RETRY_PERIOD
            try:
                lease = self._lease  # read without asking: the actor may be busy
                if not lease or self._fence.fenced:
                    if lease:
                        self._self.lost().get(timeout=ASK_TIMEOUT)
                    cut_off = not self._self.join().get(timeout=ASK_TIMEOUT)
                    if not cut_off:
                        wait = period
                    continue
                sent = time.monotonic()
                if self._etcd.refresh(lease) <= 0:
                    self._fence.now("the lease expired")
                    continue
                self._fence.renewed(sent)
                self._watchdog_renewed(sent)
                self._watchdog_fenced()
                wait = period
                self._names.retry()
                if cut_off:
                    log.info("Pool %s: etcd answers again", self._keys.pool)
                    cut_off = False
                    self._self.reconcile()
                else:
                    self._self.publish()
            except PoolUnavailable as error:
                cut_off = True
                log.debug("Pool %s: lease not renewed: %s", self._keys.pool, error.message)
            except pykka.ActorDeadError:
                return
            except Exception:  # a bug: logged, and the lease still kept
                cut_off = True
                log.exception("Pool %s: keeping the lease failed", self._keys.pool)


class PoolMemberProxy(ActorMemberMixin, pykka.ActorProxy[PoolMember]):
    is_joined = proxy_method(PoolMember.is_joined)
    join = proxy_method(PoolMember.join)
    lost = proxy_method(PoolMember.lost)
    leave = proxy_method(PoolMember.leave)
    leave_pool = proxy_method(PoolMember.leave_pool)
    publish = proxy_method(PoolMember.publish)
    reconcile = proxy_method(PoolMember.reconcile)
