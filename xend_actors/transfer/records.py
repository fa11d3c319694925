"""Session records: what the store's ``migrate/`` folder holds while a transfer runs
(facts §4.5, §7.5), typed, and their SXP both ways.

A save, a restore, a migration out and a migration in (its key starts ``in-``) each
keep one record, rewritten as the transfer goes on and deleted when it ends; a xend
that starts again after dying mid-transfer reads what is left (``Transfer._recover``).
The same SXP, less a save's temp file (``told``), is the session in the
``xend.domain.save`` and ``xend.domain.migrate`` events. ``to_sxpr`` and ``from_sxpr``
are the one place that SXP is written and read::

    (save (id N) (state S) (domain D) (file F) [(paused 0|1)] [(partial TEMPFILE)])
    (restore (id N) (file F) [(domain D)])
    (migrate (id N) (state S) (live 0|1) [(resource MBIT)] [(paused 0|1)]
             (src (host H) (domain D)) (dst (host H) [(domain D) (downtime S) (duration S)]))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from xend_actors import sxp

INCOMING_PREFIX = "in-"  # the key of a migration in: in-1, in-2, ...


class SessionState(Enum):
    BEGIN = "begin"
    COMMIT = "commit"  # a stream driver's migration: handed over, the source is to go
    OK = "ok"
    ERROR = "error"
    RECEIVE = "receive"  # a migration in


@dataclass(frozen=True)
class SaveRecord:
    id: str
    state: SessionState
    domid: int
    file: str
    paused: bool | None = None  # a stream driver's: was the guest paused before the save
    partial: str | None = None  # the temp file the image is written to until it is whole


@dataclass(frozen=True)
class RestoreRecord:
    id: str
    file: str
    domid: int | None = None  # the domain once made (a stream's before its state comes)


@dataclass(frozen=True)
class Source:
    host: str
    domid: int


@dataclass(frozen=True)
class Destination:
    host: str
    domid: int | None = None  # once known: the new domain's id
    downtime: float | None = None  # once it runs: seconds the guest was stopped
    duration: float | None = None  # and seconds the whole migration took


@dataclass(frozen=True)
class MigrateRecord:
    id: str
    state: SessionState
    live: bool
    src: Source
    dst: Destination
    resource: int | None = None  # Mbit/s asked of a migration out (0: no limit)
    paused: bool | None = None  # a stream driver's migration out: was the guest paused

    @property
    def incoming(self) -> bool:
        return self.id.startswith(INCOMING_PREFIX)


SessionRecord = SaveRecord | RestoreRecord | MigrateRecord


def durable(record: SessionRecord) -> bool:
    """Whether ``record`` must outlive a crash of the host (fsynced when written and
    deleted): only a save's, whose half-written file outlives it too. The others are
    about domains that are moving, which a host crash ends: they need only outlive a
    xend process (a record back after a crash names a domain that is no more)."""
    return isinstance(record, SaveRecord)


def to_sxpr(record: SessionRecord) -> sxp.Value:
    """The record as the store keeps it and the events carry it."""
    match record:
        case SaveRecord(key, state, domid, file, paused, partial):
            return ["save", ["id", key], ["state", state.value], ["domain", str(domid)],
                    ["file", file], *_paused(paused),
                    *([["partial", partial]] if partial is not None else [])]
        case RestoreRecord(key, file, domid):
            return ["restore", ["id", key], ["file", file],
                    *([["domain", str(domid)]] if domid is not None else [])]
        case MigrateRecord(key, state, live, src, dst, resource, paused):
            return ["migrate", ["id", key], ["state", state.value], ["live", str(int(live))],
                    *([["resource", str(resource)]] if resource is not None else []),
                    *_paused(paused),
                    ["src", ["host", src.host], ["domain", str(src.domid)]],
                    ["dst", ["host", dst.host], *_destination(dst)]]
    raise TypeError(f"not a session record: {record!r}")


def told(record: SessionRecord) -> sxp.Value:
    """The record as the events carry it: without a save's temp file, which only a xend
    starting again needs."""
    return to_sxpr(replace(record, partial=None) if isinstance(record, SaveRecord) else record)


def from_sxpr(value: sxp.Value) -> SessionRecord:
    """The record ``value`` holds; ValueError if it is none or malformed."""
    match sxp.name(value):
        case "save":
            return SaveRecord(_text(value, "id"), _state(value), _int(value, "domain"),
                              _text(value, "file"), _flag(value, "paused"),
                              _optional_text(value, "partial"))
        case "restore":
            return RestoreRecord(_text(value, "id"), _text(value, "file"),
                                 _optional_int(value, "domain"))
        case "migrate":
            src, dst = _element(value, "src"), _element(value, "dst")
            downtime, duration = (_optional_float(dst, name) for name in ("downtime",
                                                                           "duration"))
            return MigrateRecord(
                _text(value, "id"), _state(value), _bool(value, "live"),
                Source(_text(src, "host"), _int(src, "domain")),
                Destination(_text(dst, "host"), _optional_int(dst, "domain"), downtime,
                            duration),
                _optional_int(value, "resource"), _flag(value, "paused"))
    raise ValueError(f"not a session record: {sxp.show(value)[:80]}")


def _paused(paused: bool | None) -> list[sxp.Value]:
    return [["paused", str(int(paused))]] if paused is not None else []


def _destination(dst: Destination) -> list[sxp.Value]:
    fields: list[sxp.Value] = []
    if dst.domid is not None:
        fields.append(["domain", str(dst.domid)])
    if dst.downtime is not None:
        fields.append(["downtime", f"{dst.downtime:.3f}"])
    if dst.duration is not None:
        fields.append(["duration", f"{dst.duration:.3f}"])
    return fields


def _element(value: sxp.Value, name: str) -> sxp.Value:
    element = sxp.child(value, name)
    if element is None:
        raise ValueError(f"a session record without ({name} ...)")
    return element


def _text(value: sxp.Value, name: str) -> str:
    text: Any = sxp.child_value(value, name)
    if not isinstance(text, str):
        raise ValueError(f"a session record without ({name} TEXT)")
    return text


def _optional_text(value: sxp.Value, name: str) -> str | None:
    return None if sxp.child(value, name) is None else _text(value, name)


def _int(value: sxp.Value, name: str) -> int:
    text = _text(value, name)
    if not text.isdigit():
        raise ValueError(f"a session record whose {name} is {text[:40]!r}, not a number")
    return int(text)


def _optional_int(value: sxp.Value, name: str) -> int | None:
    return None if sxp.child(value, name) is None else _int(value, name)


def _optional_float(value: sxp.Value, name: str) -> float | None:
    text = _optional_text(value, name)
    return None if text is None else float(text)


def _flag(value: sxp.Value, name: str) -> bool | None:
    text = _optional_text(value, name)
    if text is None:
        return None
    if text not in ("0", "1"):
        raise ValueError(f"a session record whose {name} is {text[:40]!r}, not 0 or 1")
    return text == "1"


def _bool(value: sxp.Value, name: str) -> bool:
    flag = _flag(value, name)
    if flag is None:
        raise ValueError(f"a session record without ({name} 0|1)")
    return flag


def _state(value: sxp.Value) -> SessionState:
    return SessionState(_text(value, "state"))
