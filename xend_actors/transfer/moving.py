"""``Moving``: the domains being transferred now, so that no two transfers take the same.

A save or migration out holds its domain's name while it runs; a restore or a migration
in holds the name it brings, from before it checks that the name is free until its
domain is in the DomainTable. A second one finds the name held: 409, or ``EEXIST`` for a
migration in.
"""

from __future__ import annotations

import threading

from xend_actors.errors import Conflict


class Moving:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}

    def take(self, name: str, doing: str) -> None:
        """Hold domain ``name`` while ``doing`` it; ``Conflict`` if it is held already."""
        with self._lock:
            if name in self._held:
                raise Conflict(f"domain {name} is already being {self._held[name]}")
            self._held[name] = doing

    def release(self, name: str) -> None:
        with self._lock:
            self._held.pop(name, None)
