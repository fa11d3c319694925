"""``Moving``: the domains being transferred now, so that no two transfers take the same.

A save or migration out holds its domain's name while it runs; a restore or a migration
in holds the name it brings, from before it checks that the name is free until its
domain is in the DomainTable. A second one finds the name held: 409, or ``EEXIST`` for a
migration in.

A domain that migrated away is torn down here after the migration's reply (its qemu's
exit, its files): its name is ``leaving`` until then. A transfer that takes the name
meanwhile (the guest migrated straight back, or restored) waits for that, a few
milliseconds, rather than finding the name still taken in the hypervisor.
"""

from __future__ import annotations

import threading

from xend_actors.errors import Conflict

LEAVING_WAIT = 30.0  # s: the most a taker waits for a teardown (a qemu's quit is bounded)


class Moving:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: dict[str, str] = {}
        self._leaving: set[str] = set()

    def take(self, name: str, doing: str) -> None:
        """Hold domain ``name`` while ``doing`` it; ``Conflict`` if it is held already. A
        name ``leaving`` is waited for."""
        with self._changed:
            self._changed.wait_for(lambda: name not in self._leaving, LEAVING_WAIT)
            if name in self._leaving:
                raise Conflict(f"domain {name} is still being torn down here")
            if name in self._held:
                raise Conflict(f"domain {name} is already being {self._held[name]}")
            self._held[name] = doing

    def release(self, name: str) -> None:
        with self._changed:
            self._held.pop(name, None)

    def leaving(self, name: str) -> None:
        """Domain ``name`` migrated away; what is left of it here is torn down until
        ``left``."""
        with self._changed:
            self._leaving.add(name)

    def left(self, name: str) -> None:
        with self._changed:
            self._leaving.discard(name)
            self._changed.notify_all()
