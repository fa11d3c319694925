"""Pool-wide names: a member claims a domain's name in etcd before the domain is made
(``DomainTable.intend`` calls ``claim``), so two hosts never run two domains of one name.

A claim is ``names/<domain>`` holding the owner's member name, put only if absent (one
transaction: the etcd revision that admits the create). A claim already ours is ours
(a restart, a xend that came back). A migration in takes the claim over from the member
it comes from, and only from it: the owner's registered API address must be the peer's.
An HA domain's config is written with its claim (``ha/<domain>``), so that another
member can restart it. A release deletes both, only while the claim is still ours, so a
claim that moved on (migrated away, restarted elsewhere) is never taken back.

Releases are not on the way of a destroy: they go to a thread of their own, and one
that fails (etcd unreachable) is left to the member's reconcile when etcd is back.
A claim is: while no etcd member could be reached at the last call, it is refused at
once (503), so that the table is not held up again for every create.

A name can be ``kept``: the next release of it is not done. The fence keeps the names
of the HA domains it destroys (their claims stay this member's, so that a member back
from a short blip restarts them here, and one that was away long had them taken over),
and an HA restart keeps its name while it is made (a failed one hands the claim on).

An HA domain's name is guarded by the member's fencing watchdog (``watchdog_client.py``)
from just before its claim (the claim admits the domain: from then on, a xend that dies
or hangs has it destroyed by the watchdog) until its release, or its claim is handed
on; kept names stay guarded, and a domain gone once the watchdog's deadline passed
(fenced by it) keeps its claim too. After each join the member says the whole guarded
set (``guard_only``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from xend_actors.domain.config import DomainConfig
from xend_actors.errors import Conflict, XendError
from xend_actors.pool.entries import BadEntry, HostEntry, Keys
from xend_actors.pool.etcd import Compare, Etcd, PoolUnavailable, delete, put
from xend_actors.pool.watchdog_client import FenceWatchdog
from xend_actors.sxp import show

log = logging.getLogger(__name__)

CLAIM_TRIES = 3  # a claim raced by releases and takeovers tries again, this many times


class EtcdNames:
    """The ``NameClaims`` of a pool member ``me``."""

    def __init__(self, etcd: Etcd, keys: Keys, me: str, watchdog: FenceWatchdog) -> None:
        self.watchdog = watchdog  # destroys the guarded HA domains when xend cannot
        self._etcd = etcd
        self._keys = keys
        self._me = me
        self._releases: queue.SimpleQueue[str] = queue.SimpleQueue()
        # Names this xend claimed and has not released: made, or being made. The
        # member's reconcile keeps off them (their domains may not be listed yet).
        self._held: set[str] = set()
        self._unreleased: set[str] = set()  # releases that failed: tried again (``retry``)
        self._kept: set[str] = set()  # names whose next release is not done (``keep``)
        self._lock = threading.Lock()
        # The names the watchdog guards for this xend, as far as this xend told it; the
        # lock keeps what the watchdog is told in the order the set changes (outside
        # ``_lock``: telling a watchdog that must be started first takes a while).
        self._guarded: set[str] = set()
        self._guarding = threading.Lock()
        threading.Thread(target=self._release_each, name="pool-release", daemon=True).start()

    def claim(self, config: DomainConfig, peer: str | None = None) -> None:
        if self._etcd.unreachable:  # the table would wait out every member again
            raise PoolUnavailable(self._etcd.unreachable)
        name, keys = config.name, self._keys
        steps = [put(keys.name(name), self._me)]
        steps.append(put(keys.ha_config(name), show(config.sxpr)) if config.ha
                     else delete(keys.ha_config(name)))
        with self._lock:
            self._held.add(name)
            self._unreleased.discard(name)
        guarded = False
        try:
            if config.ha:  # before the claim admits the domain (a 503 if it cannot be)
                self._guard(name)
                guarded = True
            self._claim(name, steps, peer)
        except BaseException:
            with self._lock:
                self._held.discard(name)
            if guarded:
                self.unguard(name)
            raise

    def _claim(self, name: str, steps: list[dict[str, object]], peer: str | None) -> None:
        keys = self._keys
        for _ in range(CLAIM_TRIES):
            if self._etcd.txn([Compare(keys.name(name), "CREATE", 0)], steps):
                return
            held = self._etcd.get(keys.name(name))
            if held is None:
                continue  # released meanwhile
            owner = held.value.decode("utf-8", "replace")
            if owner != self._me and (peer is None or not self._comes_from(owner, peer)):
                raise Conflict(f"vm name clash: {name} is held by pool member {owner}")
            if self._etcd.txn([Compare(keys.name(name), "MOD", held.mod_revision)], steps):
                if owner != self._me:
                    log.info("Claim of %s taken over from pool member %s", name, owner)
                return
        raise Conflict(f"vm name clash: the claim of {name} kept changing; try again")

    def release(self, name: str) -> None:
        with self._lock:
            self._held.discard(name)
            if name in self._kept:
                self._kept.discard(name)
                log.info("Claim of %s kept (fenced or being restarted)", name)
                return
        if self._fenced_by_watchdog(name):
            log.info("Claim of %s kept (its watchdog's deadline passed: fenced)", name)
            return
        self.unguard(name)
        self._releases.put(name)

    def _fenced_by_watchdog(self, name: str) -> bool:
        """Whether ``name``'s domain went because the watchdog fenced it (a xend woken
        from a hang sees it gone): its claim stays, as the member's own fence keeps it."""
        with self._guarding:
            return name in self._guarded and self.watchdog.passed()

    def unguard(self, name: str) -> None:
        """``name`` is no longer this member's (released, or its claim handed on): the
        watchdog no longer guards it."""
        with self._guarding:
            if name in self._guarded:
                self._guarded.discard(name)
                self.watchdog.unguard(name)

    def guard_only(self, names: Iterable[str]) -> None:
        """The watchdog guards ``names`` (the HA domains a join's reconcile found here
        and ours), the HA names this xend claimed and holds (claimed meanwhile, say), and
        nothing else (a dead xend's guards, names fenced here since taken over)."""
        with self._guarding:
            with self._lock:
                held = set(self._held)
            whole = set(names) | (self._guarded & held)
            self.watchdog.replace(whole)
            self._guarded = whole

    def _guard(self, name: str) -> None:
        with self._guarding:
            self.watchdog.guard(name)
            self._guarded.add(name)

    def keep(self, name: str) -> None:
        """The next release of ``name`` is not done: its claim stays this member's."""
        with self._lock:
            self._kept.add(name)

    def unkeep(self, name: str) -> None:
        """Releases of ``name`` are done again."""
        with self._lock:
            self._kept.discard(name)

    def retry(self) -> None:
        """Try again the releases that failed (etcd answers again)."""
        with self._lock:
            again, self._unreleased = self._unreleased, set()
        for name in again:
            self._releases.put(name)

    def held(self) -> frozenset[str]:
        """The names this xend claimed and has not released."""
        with self._lock:
            return frozenset(self._held)

    def release_now(self, name: str) -> bool:
        """Drop ``name``'s claim, summary and HA config if the claim is still ours;
        whether it was (raises ``PoolUnavailable``)."""
        keys = self._keys
        return self._etcd.txn([Compare(keys.name(name), "VALUE", self._me)],
                              [delete(keys.name(name)), delete(keys.domain(name)),
                               delete(keys.ha_config(name))])

    def _comes_from(self, owner: str, peer: str) -> bool:
        """Whether member ``owner`` registered an API address on the host ``peer``."""
        held = self._etcd.get(self._keys.host(owner))
        if held is None:
            return False
        try:
            return urlsplit(HostEntry.from_json(held.value).api).hostname == peer
        except BadEntry:
            return False

    def _release_each(self) -> None:
        while True:
            name = self._releases.get()
            with self._lock:
                if name in self._held:
                    continue  # claimed again here since
            try:
                self.release_now(name)
            except XendError as error:
                with self._lock:
                    if name not in self._held:
                        self._unreleased.add(name)
                log.warning("Claim of %s not released now (%s); released when etcd "
                            "answers again", name, error.message)
