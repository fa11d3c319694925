"""The pool as one view: every member with its state and room, and every domain with
its host, read from etcd in one round trip (``GET /xend/pool/``, ``xm pool-list``).

One transaction of ranges reads the pool at one revision. A host is ``up`` while its
entry lives (under its lease); a host that holds claims but has no entry is ``down``
(its lease expired: its domains are shown where they were, until HA or their owner
moves them). A domain's host is its claim's owner; its summary (state, memory, ...) is
shown when its host wrote it, and a claim with no summary yet (or a summary its host has
not rewritten since the claim moved) still shows the name and the host.

A pool of thousands of domains is mostly the same from one read to the next, and etcd
takes most of a second's tenth to send it all: the reader keeps what it read last, and
asks etcd only for the claims and summaries written since that revision. Deletes leave
no trace there, so the same transaction counts the keys in stretches of the names known
(at most 60 a prefix, ``count_only``): a stretch whose count is not the names known in it
plus those created since had some deleted, and is listed (keys only) to tell which.
Each domain's SXP text is kept with it, so a reply is the texts joined.

What etcd holds is input: a key or value that is not what the members write is left
out, logged once per value, and never fails the read. etcd unreachable:
``PoolUnavailable`` (503).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from enum import Enum

from xend_actors import sxp
from xend_actors.domain.config import MAX_NAME_LENGTH
from xend_actors.errors import XendError
from xend_actors.pool.entries import MEMBER_NAME, BadEntry, DomainEntry, HostEntry, Keys
from xend_actors.pool.etcd import Etcd, Kv, Range, Ranged

log = logging.getLogger(__name__)

LOGGED_KEPT = 1024  # bad values remembered as logged, so that each is logged once
STRETCHES = 60  # counted ranges of each of names/ and domains/ in a read: with the other
# three, 123 ranges, under etcd's default of 128 operations a transaction (--max-txn-ops)


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
    shown: str = field(default="", repr=False, compare=False)  # ``sxpr()``'s text

    def sxpr(self) -> list[sxp.Value]:
        """``(pool (name P) (member M) (revision R) (hosts (host ...) ...)
        (domains (domain ...) ...))`` — see ``web/pool.py``."""
        return [*self._head(), ["hosts", *(host.sxpr() for host in self.hosts)],
                ["domains", *(domain.sxpr() for domain in self.domains)]]

    def _head(self) -> list[sxp.Value]:
        return ["pool", ["name", self.pool], ["member", self.member],
                ["revision", str(self.revision)]]

    def with_text(self, domains: str) -> PoolState:
        """This state with its ``shown`` text, given its ``domains`` element's."""
        hosts = " ".join(["(hosts", *(sxp.show(host.sxpr()) for host in self.hosts)])
        return replace(self, shown=f"{sxp.show(self._head())[:-1]} {hosts}) {domains})")


@dataclass(frozen=True)
class _Known:
    """The claims and summaries as last read, at ``revision``: every key there was, bad
    ones too (sorted, to count them by stretches), and what the good ones say."""

    revision: int
    claim_keys: tuple[str, ...]  # the names under names/
    summary_keys: tuple[str, ...]  # the names under domains/
    owners: dict[str, str]  # domain → the member holding its claim
    published: dict[str, DomainEntry]  # domain → its summary
    domains: dict[str, PoolDomain]
    texts: dict[str, str]  # domain → its SXP text
    listed: tuple[PoolDomain, ...]  # by name
    shown: str  # the SXP text of (domains ...)
    held: dict[str, int]  # member → how many claims it holds


NOTHING = _Known(0, (), (), {}, {}, {}, {}, (), "(domains)", {})


class PoolReader:
    """Reads the pool ``keys`` names from ``etcd``, for the member ``me``; thread-safe
    (each read starts from the last ``_Known`` and replaces it with a newer one)."""

    def __init__(self, etcd: Etcd, keys: Keys, me: str) -> None:
        self._etcd = etcd
        self._keys = keys
        self._me = me
        self._known = NOTHING
        self._logged: set[tuple[str, int]] = set()

    def warm(self) -> None:
        """The whole first read, made before any client asks (the next reads ask etcd
        only for changes); nothing if etcd does not answer now."""
        try:
            self.read()
        except XendError as error:
            log.info("Pool %s: not read yet (%s)", self._keys.pool, error.message)

    def read(self) -> PoolState:
        keys, known = self._keys, self._known
        claim_starts, summary_starts = _starts(known.claim_keys), _starts(known.summary_keys)
        revision, (hosts, claims, summaries, *counts) = self._etcd.read(
            Range(keys.hosts), Range(keys.names, since=known.revision),
            Range(keys.domains, since=known.revision),
            *_stretches(keys.names, claim_starts, count_only=True),
            *_stretches(keys.domains, summary_starts, count_only=True))
        if revision < known.revision:  # another etcd than before (restored?): afresh
            self._known = NOTHING
            return self.read()
        known = self._apply(
            known, revision, claims.kvs, summaries.kvs,
            self._keys_now(keys.names, known.claim_keys, claims.kvs, claim_starts,
                           counts[:len(claim_starts)]),
            self._keys_now(keys.domains, known.summary_keys, summaries.kvs, summary_starts,
                           counts[len(claim_starts):]))
        if known.revision >= self._known.revision:
            self._known = known
        entries = self._hosts(hosts.kvs)
        held = dict.fromkeys(entries, 0) | known.held  # every live host, and every holder
        state = PoolState(
            keys.pool, self._me, revision,
            tuple(PoolHost(name, HostState.UP if name in entries else HostState.DOWN,
                           entries.get(name), count) for name, count in sorted(held.items())),
            known.listed)
        return state.with_text(known.shown)

    def _keys_now(self, prefix: str, before: tuple[str, ...], changed: list[Kv],
                  starts: tuple[str, ...], counts: list[Ranged]) -> tuple[str, ...]:
        """Every key under ``prefix`` now (sorted; ``before`` itself if none came or
        went): those ``before``, those ``changed`` since, less those deleted. A stretch
        of keys that etcd counts other than expected (some were deleted) is listed (keys
        only) to tell which."""
        new = {kv.key[len(prefix):] for kv in changed}
        if new:
            new.difference_update(before)
        ordered = tuple(sorted((*before, *new))) if new else before
        odd = [at for at, (first, end) in enumerate(_bounds(starts))
               if counts[at].count != len(_slice(ordered, first, end))]
        if not odd:
            return ordered
        now = set(ordered)
        stretches, bounds = _stretches(prefix, starts, keys_only=True), _bounds(starts)
        _, listed = self._etcd.read(*(stretches[at] for at in odd))
        for at, ranged in zip(odd, listed, strict=True):
            first, end = bounds[at]
            there = {kv.key[len(prefix):] for kv in ranged.kvs}
            now -= set(_slice(ordered, first, end)) - there
            now |= there  # one created since: its value comes with the next read
        return tuple(sorted(now))

    def _apply(self, known: _Known, revision: int, claims: list[Kv], summaries: list[Kv],
               claim_keys: tuple[str, ...], summary_keys: tuple[str, ...]) -> _Known:
        """``known`` with the ``claims`` and ``summaries`` written since, at ``revision``,
        and without those whose keys are gone."""
        if not claims and not summaries and claim_keys is known.claim_keys and \
                summary_keys is known.summary_keys:
            return replace(known, revision=revision)  # nothing came, changed or went
        keys = self._keys
        owners, published = dict(known.owners), dict(known.published)
        gone_claims = set(known.claim_keys).difference(claim_keys)
        gone_summaries = set(known.summary_keys).difference(summary_keys)
        for name in gone_claims:
            owners.pop(name, None)
        for name in gone_summaries:
            published.pop(name, None)
        touched = gone_claims | gone_summaries
        for kv in summaries:
            name = kv.key[len(keys.domains):]
            touched.add(name)
            try:
                summary = DomainEntry.from_json(kv.value)
                if summary.name != name:
                    raise BadEntry(f"the summary of domain {summary.name[:80]}")
                published[name] = summary
            except BadEntry as error:
                self._skip(kv, error.message)
                published.pop(name, None)
        for kv in claims:
            name = kv.key[len(keys.names):]
            touched.add(name)
            owner = kv.value.decode("utf-8", "replace")
            if _domain_name(name) and MEMBER_NAME.fullmatch(owner):
                owners[name] = owner
            else:
                self._skip(kv, "not a domain's name and a member's")
                owners.pop(name, None)
        domains, texts = dict(known.domains), dict(known.texts)
        for name in touched:
            holder = owners.get(name)
            if holder is None:
                domains.pop(name, None)
                texts.pop(name, None)
                continue
            written = published.get(name)
            # A summary of another host's: written before the claim moved.
            domain = PoolDomain(name, holder, written
                                if written is not None and written.host == holder else None)
            domains[name] = domain
            texts[name] = sxp.show(domain.sxpr())
        order = sorted(domains)
        held: dict[str, int] = {}
        for domain in domains.values():
            held[domain.host] = held.get(domain.host, 0) + 1
        return _Known(revision, claim_keys, summary_keys, owners, published, domains, texts,
                      tuple(domains[name] for name in order),
                      " ".join(["(domains", *(texts[name] for name in order)]) + ")", held)

    def _hosts(self, kvs: list[Kv]) -> dict[str, HostEntry]:
        entries = {}
        for kv in kvs:
            try:
                entry = HostEntry.from_json(kv.value)
            except BadEntry as error:
                self._skip(kv, error.message)
                continue
            if kv.key != self._keys.host(entry.host):
                self._skip(kv, f"the entry of host {entry.host}")
                continue
            entries[entry.host] = entry
        return entries

    def _skip(self, kv: Kv, why: str) -> None:
        seen = (kv.key, kv.mod_revision)
        if seen in self._logged:
            return
        if len(self._logged) >= LOGGED_KEPT:
            self._logged.clear()
        self._logged.add(seen)
        log.warning("Pool %s: %s left out of the pool's view: %s", self._keys.pool,
                    kv.key[:200], why)


def _starts(names: tuple[str, ...]) -> tuple[str, ...]:
    """Where each stretch of the sorted ``names`` starts ('' for the first): at most
    ``STRETCHES`` of them, each counted by one range of a read."""
    size = max(1, -(-len(names) // STRETCHES))
    return ("", *names[size::size])


def _bounds(starts: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """Each stretch's first name and the name it ends before (None: the last)."""
    return [(first, starts[at + 1] if at + 1 < len(starts) else None)
            for at, first in enumerate(starts)]


def _stretches(prefix: str, starts: tuple[str, ...], **options: bool) -> list[Range]:
    """A range for each stretch of the keys under ``prefix``."""
    beyond = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the first key after the prefix's
    return [Range(prefix + first, end=prefix + end if end is not None else beyond,
                  **options) for first, end in _bounds(starts)]


def _slice(ordered: tuple[str, ...], first: str, end: str | None) -> tuple[str, ...]:
    return ordered[bisect_left(ordered, first):
                   bisect_left(ordered, end) if end is not None else len(ordered)]


def _domain_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LENGTH and name.isprintable()
