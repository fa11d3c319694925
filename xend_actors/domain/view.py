"""What the web reads of the domains without asking any actor: the DomainTable's
current snapshot, and each domain's info SXP, shown once and kept until it changes.

The table makes a new ``Snapshot`` whenever what it knows of a domain changes (a new
record, a new hypervisor reading, a domain added or gone), at the end of the message
that changed it and before any event saying so is published, and stores it in its
``TableView``. A web thread takes ``current()`` and reads it as long as it likes: a
snapshot is never changed once made. Storing and loading one attribute are each a
single bytecode under CPython's interpreter lock, so a reader gets the old snapshot
or the new one, never a mix, and needs no lock.

Values that move by themselves are made at read time: ``up_time`` from the start time
and the reader's clock; ``cpu_time`` is the hypervisor's last reading, which the table
refreshes about every ``READING_AGE`` s while someone reads. A domain's shown text is
kept in pieces around them (and around its console's, which is the Consoles' own
view), so a new cpu reading does not make the text be shown again.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING

from xend_actors import sxp
from xend_actors.console.view import ConsoleView, ShownConsole
from xend_actors.domain.record import DomainInfo, DomainRecord, info_sxpr
from xend_actors.errors import Conflict, NotFound
from xend_actors.hypervisor.base import HvDomain

if TYPE_CHECKING:
    from xend_actors.domain.domain import DomainProxy

HOST_REFUSAL = "Domain-0 is the host: it cannot be paused, shut down or destroyed"
# A reading's fields but cpu_time, compared for each running domain at each refresh.
_steady = operator.attrgetter(*(f.name for f in fields(HvDomain) if f.name != "cpu_time"))

def unknown_domain(dom: str) -> NotFound:
    """The original's 404 for ``dom``, saying what was looked for."""
    return NotFound(f"invalid domain:{dom[:80]}: no domain has that name or id")


READING_AGE = 1.0  # s: how old a cpu_time may be while the domains are being read

# Where the values made at read time go in a domain's shown pieces.
_CPU, _UP, _CONSOLE = "cpu_time", "up_time", "console"
_CONSOLE_MARK: list = ["console"]  # stands for the console while the rest is shown
Piece = str | tuple[str]  # shown text, or (the name of a value made at read time,)


@dataclass(frozen=True)
class Listed:
    """One domain in a snapshot: its record, the hypervisor's last reading, and its
    Domain actor (whom the web asks to change it, without asking the table who it is)."""

    record: DomainRecord
    hv: HvDomain | None
    domain: DomainProxy | None = None
    # The pieces of its shown info, made by the first reader; shared with the next
    # Listed of the same domain when only its cpu_time moved.
    _shown: list[tuple[Piece, ...]] = field(default_factory=list, compare=False, repr=False)

    def info(self, console: ShownConsole | None, now: float) -> DomainInfo:
        return DomainInfo(self.record, self.hv, console.info if console else None, now)

    def moved(self, hv: HvDomain | None) -> Listed:
        """This domain with a new reading; its shown pieces kept if only cpu_time moved."""
        same = hv is not None and self.hv is not None and _steady(hv) == _steady(self.hv)
        return Listed(self.record, hv, self.domain, self._shown if same else [])

    def show(self, console: ShownConsole | None, now: float) -> str:
        """``sxp.show(self.info(console, now).sxpr())``, from the kept pieces."""
        if not self._shown:
            self._shown.append(self._pieces())  # two readers may both make it: same text
        parts = []
        for piece in self._shown[0]:
            if type(piece) is str:
                parts.append(piece)
            elif piece[0] == _CONSOLE:
                if console is not None:
                    parts.append(console.text)
            elif piece[0] == _CPU:
                assert self.hv is not None
                parts.append(f"(cpu_time {_number(self.hv.cpu_time)})")
            else:
                assert self.record.start_time is not None
                parts.append(f"(up_time {_number(now - self.record.start_time)})")
        return "(" + " ".join(parts) + ")"

    def _pieces(self) -> tuple[Piece, ...]:
        """The info's items shown, runs of fixed ones joined; the moving ones by name."""
        pieces: list[Piece] = []
        run: list[str] = []
        for item in info_sxpr(self.record, self.hv, 0.0, _CONSOLE_MARK):
            if item is _CONSOLE_MARK or (type(item) is list and item[0] in (_CPU, _UP)):
                if run:
                    pieces.append(" ".join(run))
                    run = []
                pieces.append((_CONSOLE if item is _CONSOLE_MARK else item[0],))
            else:
                run.append(sxp.show(item))
        if run:
            pieces.append(" ".join(run))
        return tuple(pieces)


def _number(value: float) -> str:
    """``sxp.show(value)`` of a float (12 significant digits, Python 2's ``str``), made
    here for the two that move: the tests hold it to ``sxp.show``."""
    text = f"{value:.12g}"
    return text + ".0" if text.lstrip("-").isdigit() else text


@dataclass(frozen=True)
class Snapshot:
    """Every domain the table has, in its order, by id and by name."""

    by_id: Mapping[int, Listed]
    by_name: Mapping[str, int]

    def find(self, dom: str) -> Listed:
        """``dom`` by name, else by id (as the table looks it up); NotFound if neither."""
        domid = self.by_name.get(dom)
        if domid is None and dom.isdigit():
            domid = int(dom)
        listed = self.by_id.get(domid) if domid is not None else None
        if listed is None:
            raise unknown_domain(dom)
        return listed

    def domain(self, dom: str, *, guest_only: bool = False) -> DomainProxy:
        """The Domain actor of ``dom`` (as ``DomainTable.find``); ``guest_only`` refuses
        Domain-0."""
        listed = self.find(dom)
        if guest_only and listed.record.domid == 0:
            raise Conflict(HOST_REFUSAL)
        if listed.domain is None:
            raise unknown_domain(dom)
        return listed.domain

    def __iter__(self) -> Iterator[Listed]:
        return iter(self.by_id.values())

    @functools.cached_property
    def names_shown(self) -> str:
        return sxp.show([listed.record.name for listed in self])


EMPTY = Snapshot(MappingProxyType({}), MappingProxyType({}))


class TableView:
    """The table's current snapshot and the consoles' view, read by any thread."""

    def __init__(self, consoles: ConsoleView, clock: Callable[[], float] = time.time) -> None:
        self._current = EMPTY
        self._consoles = consoles
        self._clock = clock
        self._read = time.monotonic()  # when it was last read: the cpu readings follow

    def current(self) -> Snapshot:
        return self._current

    def publish(self, snapshot: Snapshot) -> None:
        """The DomainTable only: ``snapshot`` is the current one from now on."""
        self._current = snapshot

    def read_lately(self, seconds: float) -> bool:
        """Whether a reader came within ``seconds`` (the table then refreshes cpu_time)."""
        return time.monotonic() - self._read < seconds

    def _reading(self) -> tuple[Snapshot, Mapping[int, ShownConsole], float]:
        self._read = time.monotonic()
        return self._current, self._consoles.current(), self._clock()

    # --- what the web answers: the typed value (for the pages) and its SXP shown -----

    def info(self, dom: str) -> tuple[DomainInfo, str]:
        """``dom``'s info and its SXP text; NotFound if the table has no such domain."""
        snapshot, consoles, now = self._reading()
        listed = snapshot.find(dom)
        console = consoles.get(listed.record.domid)
        return listed.info(console, now), listed.show(console, now)

    def infos(self) -> tuple[list[DomainInfo], str]:
        """Every domain's info, in the table's order, and the list's SXP text."""
        snapshot, consoles, now = self._reading()
        infos, shown = [], []
        for listed in snapshot:
            console = consoles.get(listed.record.domid)
            infos.append(listed.info(console, now))
            shown.append(listed.show(console, now))
        return infos, "(" + " ".join(shown) + ")"

    def domain(self, dom: str, *, guest_only: bool = False) -> DomainProxy:
        """``dom``'s Domain actor, to ask for a change (``Snapshot.domain``)."""
        return self._current.domain(dom, guest_only=guest_only)

    def names(self) -> tuple[list[str], str]:
        snapshot = self._current
        return [listed.record.name for listed in snapshot], snapshot.names_shown
