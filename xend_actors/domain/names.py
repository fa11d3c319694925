"""Who else must agree before a name is taken: the ``NameClaims`` the DomainTable asks
when a domain is about to be made here, and tells when one is gone for good.

A xend on its own needs nobody's word (``LocalNames``); a pool member claims each name
in the pool's etcd (``pool/names.py``), so that two hosts never run two domains of one
name. The table calls a claim on its own thread, as part of admitting the domain
(``DomainTable.intend``), before anything of it is written.
"""

from __future__ import annotations

from typing import Protocol

from xend_actors.domain.config import DomainConfig


class NameClaims(Protocol):
    def claim(self, config: DomainConfig, peer: str | None = None) -> None:
        """Hold ``config.name`` for a domain about to be made here; ``Conflict`` naming
        who holds it, or a 503 when whoever must agree cannot be asked. ``peer``: the
        address a migration in comes from, whose claim it takes over."""

    def release(self, name: str) -> None:
        """The domain ``name`` is gone from here for good (destroyed, failed, or moved
        away): its claim, if still this host's, goes. Never raises."""


class LocalNames:
    """No pool: the table's own check is the only one."""

    def claim(self, config: DomainConfig, peer: str | None = None) -> None:
        pass

    def release(self, name: str) -> None:
        pass
