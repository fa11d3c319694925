"""One event as xend delivers it, the form it is logged and sent in, and the
subscription patterns of the original EventServer (facts §11.1): an exact name
``a.b.c``; ``a.b.?`` for exactly one more component; ``a.b.*`` for ``a.b`` and anything
below it; ``*`` for everything. Clients read events in this form too.
"""

from __future__ import annotations

from dataclasses import dataclass

from xend_actors import sxp


@dataclass(frozen=True)
class Event:
    """One event as delivered: its sequence number, name, SXP value and Unix time."""

    seq: int
    name: str
    value: sxp.Value
    time: float

    def sxpr(self) -> sxp.Value:
        """The event as the debug port prints it: ``(event NAME VALUE)``."""
        return ["event", self.name, self.value]

    def record(self) -> sxp.Value:
        """The event with its number and time, as the log, HTTP and notify URLs carry it."""
        return ["event", ["seq", str(self.seq)], ["time", repr(self.time)],
                ["name", self.name], ["value", self.value]]

    def record_shown(self, value_shown: str) -> str:
        """``sxp.show(self.record())``, given the value already shown (the bus shows
        each event's value once, for xend's log and for the event log)."""
        return (f"(event (seq {self.seq}) (time {sxp.show(repr(self.time))}) "
                f"(name {sxp.show(self.name)}) (value {value_shown}))")

    @classmethod
    def from_record(cls, record: sxp.Value) -> Event:
        """The event of a ``record()``; ValueError if it is not one."""
        if sxp.name(record) != "event":
            raise ValueError("not an (event ...) record")
        name, value = sxp.child_value(record, "name"), sxp.child(record, "value")
        if not isinstance(name, str) or not isinstance(value, list) or len(value) != 2:
            raise ValueError("an event record needs (name NAME) and (value V)")
        return cls(int(sxp.child_value(record, "seq", "")), name, value[1],
                   float(sxp.child_value(record, "time", "")))



def matches(pattern: str, name: str) -> bool:
    """Whether the event ``name`` matches the subscription ``pattern``."""
    if pattern in ("*", name):
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        return name == prefix or name.startswith(prefix + ".")
    if pattern.endswith(".?"):
        prefix = pattern[:-1]
        rest = name[len(prefix) :]
        return name.startswith(prefix) and bool(rest) and "." not in rest
    return False

