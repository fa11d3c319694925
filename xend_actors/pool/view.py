"""The pool as one view: every member with its state and room, and every domain with
its host, read from etcd in one round trip (``GET /xend/pool/``, ``xm pool-list``).

One transaction of three ranges (``hosts/``, ``names/``, ``domains/``) reads the pool at
one revision. A host is ``up`` while its entry lives (under its lease); a host that
holds claims but has no entry is ``down`` (its lease expired: its domains are shown
where they were, until HA or their owner moves them). A domain's host is its claim's
owner; its summary (state, memory, ...) is shown when its host wrote it, and a claim
with no summary yet (or a summary its host has not rewritten since the claim moved)
still shows the name and the host.

What etcd holds is input: a key or value that is not what the members write is left
out, logged once per value, and never fails the read. etcd unreachable:
``PoolUnavailable`` (503).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from xend_actors import sxp
from xend_actors.domain.config import MAX_NAME_LENGTH
from xend_actors.pool.entries import MEMBER_NAME, BadEntry, DomainEntry, HostEntry, Keys
from xend_actors.pool.etcd import Etcd, Kv

log = logging.getLogger(__name__)

LOGGED_KEPT = 1024  # bad values remembered as logged, so that each is logged once


class HostState(Enum):
    UP = "up"  # its entry lives under its lease
    DOWN = "down"  # it holds claims, but its lease expired


@dataclass(frozen=True)
class PoolHost:
    """A member of the pool: as it registered (None once it is down), and how many of
    the pool's domains it holds."""

    name: str
    state: HostState
    entry: HostEntry | None
    domains: int

    def sxpr(self) -> list[sxp.Value]:
        shown: list[sxp.Value] = [
            "host", ["name", self.name], ["state", self.state.value],
            ["domain_count", str(self.domains)]]
        entry = self.entry
        if entry is not None:
            shown += [["api", entry.api], ["fingerprint", entry.fingerprint],
                      ["free_mb", str(entry.free_mb)], ["cpus", str(entry.cpus)],
                      ["load", str(entry.load)], ["joined", str(entry.joined)]]
        return shown


@dataclass(frozen=True)
class PoolDomain:
    """A domain of the pool: its name, its host (the claim's owner) and its summary,
    None until that host has written one."""

    name: str
    host: str
    summary: DomainEntry | None

    def sxpr(self) -> list[sxp.Value]:
        shown: list[sxp.Value] = ["domain", ["name", self.name], ["host", self.host]]
        summary = self.summary
        if summary is not None:
            shown += [["id", str(summary.domid)], ["state", summary.state],
                      ["memory", str(summary.memory_mb)], ["vcpus", str(summary.vcpus)],
                      ["ha", "yes" if summary.ha else "no"]]
        return shown


@dataclass(frozen=True)
class PoolState:
    """The whole pool at one etcd revision, as the member ``member`` read it."""

    pool: str
    member: str
    revision: int
    hosts: tuple[PoolHost, ...]  # by name
    domains: tuple[PoolDomain, ...]  # by name

    def sxpr(self) -> list[sxp.Value]:
        """``(pool (name P) (member M) (revision R) (hosts (host ...) ...)
        (domains (domain ...) ...))`` — see ``web/pool.py``."""
        return ["pool", ["name", self.pool], ["member", self.member],
                ["revision", str(self.revision)],
                ["hosts", *(host.sxpr() for host in self.hosts)],
                ["domains", *(domain.sxpr() for domain in self.domains)]]


class PoolReader:
    """Reads the pool ``keys`` names from ``etcd``, for the member ``me``; thread-safe
    (each read is one request; the log memo tolerates races)."""

    def __init__(self, etcd: Etcd, keys: Keys, me: str) -> None:
        self._etcd = etcd
        self._keys = keys
        self._me = me
        self._logged: set[tuple[str, int]] = set()

    def read(self) -> PoolState:
        keys = self._keys
        revision, (host_kvs, claim_kvs, summary_kvs) = self._etcd.get_prefixes(
            keys.hosts, keys.names, keys.domains)
        entries: dict[str, HostEntry] = {}
        for kv in host_kvs:
            try:
                entry = HostEntry.from_json(kv.value)
            except BadEntry as error:
                self._skip(kv, error.message)
                continue
            if kv.key != keys.host(entry.host):
                self._skip(kv, f"the entry of host {entry.host}")
                continue
            entries[entry.host] = entry
        summaries: dict[str, DomainEntry] = {}
        for kv in summary_kvs:
            try:
                summary = DomainEntry.from_json(kv.value)
            except BadEntry as error:
                self._skip(kv, error.message)
                continue
            if kv.key != keys.domain(summary.name):
                self._skip(kv, f"the summary of domain {summary.name[:80]}")
                continue
            summaries[summary.name] = summary
        domains: list[PoolDomain] = []
        held = dict.fromkeys(entries, 0)  # claims by owner; every live host is shown
        for kv in claim_kvs:
            name = kv.key[len(keys.names):]
            owner = kv.value.decode("utf-8", "replace")
            if not _domain_name(name) or not MEMBER_NAME.fullmatch(owner):
                self._skip(kv, "not a domain's name and a member's")
                continue
            published = summaries.get(name)
            # A summary of another host's: written before the claim moved.
            domains.append(PoolDomain(name, owner, published
                                      if published is not None and published.host == owner
                                      else None))
            held[owner] = held.get(owner, 0) + 1
        hosts = tuple(PoolHost(name, HostState.UP if name in entries else HostState.DOWN,
                               entries.get(name), count)
                      for name, count in sorted(held.items()))
        domains.sort(key=lambda domain: domain.name)
        return PoolState(keys.pool, self._me, revision, hosts, tuple(domains))

    def _skip(self, kv: Kv, why: str) -> None:
        seen = (kv.key, kv.mod_revision)
        if seen in self._logged:
            return
        if len(self._logged) >= LOGGED_KEPT:
            self._logged.clear()
        self._logged.add(seen)
        log.warning("Pool %s: %s left out of the pool's view: %s", self._keys.pool,
                    kv.key[:200], why)


def _domain_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LENGTH and name.isprintable()
