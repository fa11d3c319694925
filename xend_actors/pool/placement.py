"""Placement: which member of the pool a domain goes to.

The member with the most free memory that fits the domain, ties by the fewest domains,
then by name (so that every member picks alike from the same entries). Only the members
whose entry is in etcd are up: an entry lives under its member's lease. A pure function
of the entries, so that the rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from xend_actors.errors import Conflict
from xend_actors.pool.entries import HostEntry


class NoRoom(Conflict):
    """No member has the memory a domain needs (409: the pool as it is now cannot)."""


def place(hosts: Iterable[HostEntry], memory_mb: int, *,
          among: frozenset[str] | None = None, what: str = "the domain") -> HostEntry:
    """The member ``what`` (needing ``memory_mb``) goes to, of ``hosts`` (only those named
    in ``among``, if given); ``NoRoom`` naming the need and the best free figure."""
    candidates = [h for h in hosts if among is None or h.host in among]
    if not candidates:
        raise NoRoom(f"no pool member to place {what} on")
    best = min(candidates, key=lambda h: (-h.free_mb, h.domains, h.host))
    if best.free_mb < memory_mb:
        raise NoRoom(f"no pool member has room for {what}: it needs {memory_mb} MB, the "
                     f"most free is {best.free_mb} MB (on {best.host})")
    return best
