"""What the web reads of the consoles without asking the Consoles actor: each live
console's info and its SXP text, by domain id, as the Consoles last published them.

The Consoles' loop replaces the whole mapping (a new dict, never changed after) each
time a console opens, closes or gains or loses its client, before the event that says
so is published; readers take ``current()`` without a lock (see ``domain/view.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from xend_actors import sxp
from xend_actors.console.info import ConsoleInfo


@dataclass(frozen=True)
class ShownConsole:
    info: ConsoleInfo
    text: str  # ``sxp.show(info.sxpr())``, made once by the Consoles

    @classmethod
    def of(cls, info: ConsoleInfo) -> ShownConsole:
        return cls(info, sxp.show(info.sxpr()))


class ConsoleView:
    def __init__(self) -> None:
        self._current: Mapping[int, ShownConsole] = MappingProxyType({})

    def current(self) -> Mapping[int, ShownConsole]:
        return self._current

    def publish(self, consoles: Mapping[int, ShownConsole]) -> None:
        """The Consoles' loop only: ``consoles`` is the view's from now on, never changed
        (a ``Layered``, or a dict no one keeps)."""
        self._current = consoles
