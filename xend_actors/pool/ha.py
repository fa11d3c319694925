"""HA restart: a member restarts here the HA domains of members that are gone, each
exactly once in the pool, and its own HA domains that its fence (or a host restart)
took down while their claims stayed its.

Every second the member reads ``hosts/``; when the set of members changed (and every
TTL regardless) it reads ``names/``: a claim whose owner has no ``hosts/`` entry (its
lease expired) and that has an ``ha/`` config is an orphan. Each member tries to take
each orphan over after a delay by its rank (the members that fit the domain first, then
by most free memory), so that the roomiest usually wins; the takeover is one etcd
transaction (``names/<d>`` unchanged since read AND ``hosts/<dead>`` absent → the claim
is ours), so exactly one member wins and the losers do nothing. The winner makes the
domain from ``ha/<d>`` through the table, as a create from the web does (create, build,
unpause; the name's claim passes, being ours).

A restart that fails here (no room, a disk missing here) hands the claim back to the
member that is gone, so that another member takes it over at its next look; this member
leaves that domain to the others for ``RETRY_AFTER``. Every restart, and every failure,
is logged and published (``xend.pool.restarted``, ``xend.pool.restart_failed``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from xend_actors import sxp
from xend_actors.actors import Deadline, ask
from xend_actors.domain.config import DomainConfig, check_new_domain, parse_domain_config
from xend_actors.domain.table import DomainTableProxy
from xend_actors.domain.view import TableView
from xend_actors.errors import XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.hypervisor.base import ShutdownReason
from xend_actors.pool.entries import MEMBER_NAME, BadEntry, HostEntry, Keys
from xend_actors.pool.etcd import Compare, Etcd, put
from xend_actors.pool.fence import Fence
from xend_actors.pool.names import EtcdNames

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between two reads of hosts/
RANK_DELAY = 1.0  # seconds between one member's turn and the next's (the poll's period:
# the members' polls are not in step, so a shorter delay would not order them)
RETRY_AFTER = 60.0  # seconds a domain whose restart failed here is left to the others
GONE_TIMEOUT = 30.0  # seconds a failed restart's domain has to leave the table


@dataclass(frozen=True)
class Orphan:
    """An HA domain whose member is gone: its claim as read, and its config."""

    name: str
    owner: str
    mod_revision: int
    config: DomainConfig


class HaRestarts:
    """The HA watch and restarts of member ``me`` (two threads of its own)."""

    def __init__(self, etcd: Etcd, keys: Keys, me: str, ttl: float, names: EtcdNames,
                 table: DomainTableProxy, view: TableView, events: EventBusProxy,
                 fence: Fence, build_timeout: float, joined: Callable[[], bool]) -> None:
        self._etcd = etcd
        self._keys = keys
        self._me = me
        self._ttl = ttl
        self._names = names
        self._table = table
        self._view = view
        self._events = events
        self._fence = fence
        self._build_timeout = build_timeout
        self._joined = joined
        self._stopping = threading.Event()
        self._queue: queue.SimpleQueue[tuple[str, str, DomainConfig | None]] = \
            queue.SimpleQueue()
        self._busy: set[str] = set()  # queued or being restarted here
        self._failed: dict[str, float] = {}  # failed here: when (monotonic)
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="pool-ha-watch", daemon=True).start()
        threading.Thread(target=self._restart_each, name="pool-ha-restart",
                         daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(("", "", None))

    def busy(self, name: str) -> bool:
        """Whether ``name`` is queued or being restarted here."""
        with self._lock:
            return name in self._busy

    def restart_own(self, name: str) -> None:
        """Restart here the HA domain ``name`` whose claim is this member's (its fence
        took it down, or the host restarted), from its ``ha/`` config."""
        self._enqueue(name, self._me, None)

    # --- watching --------------------------------------------------------------------------

    def _watch(self) -> None:
        members: frozenset[str] | None = None
        sweep = 0.0
        while not self._stopping.wait(POLL):
            if not self._joined() or self._fence.fenced:
                members = None
                continue
            try:
                hosts = self._hosts()
                if self._me not in hosts:
                    members = None
                    continue
                now = time.monotonic()
                if frozenset(hosts) == members and now < sweep:
                    continue
                members, sweep = frozenset(hosts), now + self._ttl
                self._take_over(self._orphans(hosts), hosts, now)
            except XendError as error:
                log.debug("Pool %s: HA watch: %s", self._keys.pool, error.message)
                members = None

    def _hosts(self) -> dict[str, HostEntry]:
        hosts = {}
        for kv in self._etcd.get_prefix(self._keys.hosts):
            try:
                entry = HostEntry.from_json(kv.value)
            except BadEntry:
                continue
            hosts[entry.host] = entry
        return hosts

    def _orphans(self, hosts: dict[str, HostEntry]) -> list[Orphan]:
        orphans = []
        now = time.monotonic()
        for kv in self._etcd.get_prefix(self._keys.names):
            name = kv.key.removeprefix(self._keys.names)
            owner = kv.value.decode("utf-8", "replace")
            if owner in hosts or not MEMBER_NAME.fullmatch(owner) or self.busy(name):
                continue
            if now < self._failed.get(name, 0.0):
                continue
            config = self._ha_config(name)
            if config is not None:
                orphans.append(Orphan(name, owner, kv.mod_revision, config))
        return orphans

    def _ha_config(self, name: str) -> DomainConfig | None:
        """``name``'s HA config from ``ha/<name>``; None if it has none (not HA) or it is
        not a config xend would take (logged)."""
        kv = self._etcd.get(self._keys.ha_config(name))
        if kv is None:
            return None
        try:
            config = check_new_domain(parse_domain_config(sxp.parse(kv.value)))
        except XendError as error:
            log.warning("Pool %s: the HA config of %s is unusable: %s", self._keys.pool,
                        name, error.message)
            return None
        if config.name != name:
            log.warning("Pool %s: the HA config of %s names %s", self._keys.pool, name,
                        config.name)
            return None
        return config

    def _take_over(self, orphans: list[Orphan], hosts: dict[str, HostEntry],
                   seen: float) -> None:
        """Each orphan's takeover tried at this member's turn; the won ones restarted."""
        turns = sorted(orphans, key=lambda o: _rank(self._me, hosts, o.config.memory_mb))
        for orphan in turns:
            turn = seen + RANK_DELAY * _rank(self._me, hosts, orphan.config.memory_mb)
            if self._stopping.wait(max(0.0, turn - time.monotonic())):
                return
            if self._fence.fenced:
                return
            keys = self._keys
            won = self._etcd.txn(
                [Compare(keys.name(orphan.name), "MOD", orphan.mod_revision),
                 Compare(keys.host(orphan.owner), "CREATE", 0)],
                [put(keys.name(orphan.name), self._me)])
            if won:
                log.info("Pool %s: took over HA domain %s from member %s", keys.pool,
                         orphan.name, orphan.owner)
                self._enqueue(orphan.name, orphan.owner, orphan.config)

    # --- restarting ------------------------------------------------------------------------

    def _enqueue(self, name: str, owner: str, config: DomainConfig | None) -> None:
        with self._lock:
            if name in self._busy:
                return
            self._busy.add(name)
        self._queue.put((name, owner, config))

    def _restart_each(self) -> None:
        while True:
            name, owner, config = self._queue.get()
            if self._stopping.is_set():
                return
            try:
                self._restart(name, owner, config)
            except Exception:  # the thread must live on
                log.exception("Pool %s: restart of %s", self._keys.pool, name)
            finally:
                with self._lock:
                    self._busy.discard(name)

    def _restart(self, name: str, owner: str, config: DomainConfig | None) -> None:
        """Make ``name`` here from its HA config; ``owner``: the member it ran on."""
        pool = self._keys.pool
        if config is None:
            config = self._ha_config(name)
            if config is None:
                return
        if self._fence.fenced or name in self._view.current().by_name:
            return  # the next join's reconcile decides
        deadline = Deadline.after(self._build_timeout)
        self._names.keep(name)  # a failed make must not release the claim: handed on
        try:
            domain = ask(self._table.create(config), "the domain table", deadline)
            if self._fence.fenced:  # fenced while it was made: not listed when it fenced
                ask(domain.destroy(ShutdownReason.HALT), f"domain {name}", deadline)
                return
            record = ask(domain.build(deadline.inner()), f"building domain {name}",
                         deadline)
            ask(ask(domain.unpause(), f"domain {name}", deadline), "the domain table",
                deadline)
        except XendError as error:
            self._failed_here(name, owner, error.message)
            return
        self._names.unkeep(name)
        log.info("Pool %s: HA domain %s restarted here (id %s; it ran on %s)", pool, name,
                 record.domid, owner)
        self._events.publish("xend.pool.restarted", [name, str(record.domid), owner])

    def _failed_here(self, name: str, owner: str, why: str) -> None:
        """A restart that failed: once its domain left the table (its release skipped),
        the claim goes back to ``owner``, for another member to take over."""
        pool = self._keys.pool
        log.error("Pool %s: HA restart of %s failed here: %s", pool, name, why)
        self._events.publish("xend.pool.restart_failed", [name, owner, why])
        until = time.monotonic() + GONE_TIMEOUT
        while name in self._view.current().by_name and time.monotonic() < until:
            time.sleep(0.05)
        if owner == self._me or self._fence.fenced:
            self._names.unkeep(name)  # its claim stays ours: the next join tries again
            return
        self._failed[name] = time.monotonic() + RETRY_AFTER
        try:
            handed = self._etcd.txn([Compare(self._keys.name(name), "VALUE", self._me)],
                                    [put(self._keys.name(name), owner)])
        except XendError as error:
            log.warning("Pool %s: the claim of %s stays here (%s)", pool, name,
                        error.message)
            return  # kept: the next join's reconcile tries it here again
        self._names.unkeep(name)
        if handed:
            self._names.unguard(name)  # not ours to fence any more
            log.info("Pool %s: the claim of %s handed back to %s for another member",
                     pool, name, owner)


def _rank(me: str, hosts: dict[str, HostEntry], memory_mb: int) -> int:
    """This member's place in the order the members try a takeover: the members the
    domain fits first, then the most free memory, the fewest domains, the name."""
    order = sorted(hosts.values(), key=lambda h: (h.free_mb < memory_mb, -h.free_mb,
                                                  h.domains, h.host))
    return next(i for i, h in enumerate(order) if h.host == me)
