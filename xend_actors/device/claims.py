"""The BlockClaims actor: which domains use which host block nodes, and how (facts §5.3).

Before a vbd is attached its node is claimed: a node exported writable to one domain
cannot be given to another, nor written while others read it, nor written while it is
mounted read-write on the host. A vbd whose mode carries ``!`` (``w!``) skips the
check, as in the original. Claims are xend's memory only: each Domain claims its vbds
again when xend restarts.
"""

from __future__ import annotations

import os
from collections import defaultdict

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.errors import Conflict
from xend_actors.trace import TracedActor

MOUNTS = "/proc/self/mounts"


class BlockClaims(TracedActor):
    def __init__(self) -> None:
        super().__init__()
        # node (real path) -> domid -> writable; a domain may hold a node more than once
        self._claims: dict[str, dict[int, list[bool]]] = defaultdict(dict)

    def claim(self, node: str, domid: int, writable: bool, check: bool = True) -> None:
        """Record that ``domid`` uses ``node``; Conflict if the sharing rule forbids it."""
        key = os.path.realpath(node)
        if check:
            others = {d: uses for d, uses in self._claims.get(key, {}).items() if d != domid}
            writers = sorted(d for d, uses in others.items() if any(uses))
            if writers:
                raise Conflict(f"vbd: Segment {node} is in writable use "
                               f"(domain {', '.join(map(str, writers))})")
            if writable and others:
                raise Conflict(f"vbd: Segment {node} is in read-only use "
                               f"(domain {', '.join(map(str, sorted(others)))})")
            if writable and key in _mounted_read_write():
                raise Conflict(f"vbd: Segment {node} is mounted read-write on the host")
        self._claims[key].setdefault(domid, []).append(writable)

    def release(self, node: str, domid: int, writable: bool) -> None:
        key = os.path.realpath(node)
        uses = self._claims.get(key, {}).get(domid)
        if uses and writable in uses:
            uses.remove(writable)
            if not uses:
                del self._claims[key][domid]
            if not self._claims[key]:
                del self._claims[key]


class BlockClaimsProxy(ActorMemberMixin, pykka.ActorProxy[BlockClaims]):
    claim = proxy_method(BlockClaims.claim)
    release = proxy_method(BlockClaims.release)


def _mounted_read_write() -> set[str]:
    found = set()
    try:
        with open(MOUNTS) as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 4 and fields[0].startswith("/") and \
                        "rw" in fields[3].split(","):
                    found.add(os.path.realpath(fields[0]))
    except OSError:
        pass
    return found
