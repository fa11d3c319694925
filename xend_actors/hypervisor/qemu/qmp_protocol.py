"""QMP's messages as values: the lines a qemu monitor and xend exchange, bytes to values
and back, and no socket (``qmp.py`` is the connection that uses them).

QMP is one JSON object per line. On connecting, qemu greets with
``{"QMP": {"version": ..., "capabilities": [...]}}``; the client answers
``{"execute": "qmp_capabilities"}``, and from its reply on sends commands
``{"execute": NAME, "id": ID, "arguments": {...}}``. qemu answers each with
``{"return": VALUE, "id": ID}`` or ``{"error": {"class": C, "desc": TEXT}, "id": ID}``,
and between replies sends events ``{"event": NAME, "data": {...}, ...}``.

A line longer than ``MAX_LINE`` bytes, or that is not JSON, is garbage (``ValueError``);
a JSON value that is none of the above is no message (``None``), which a reader skips.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 16 * 1024 * 1024  # a query-* reply can be long; a line past this is garbage


@dataclass(frozen=True)
class Greeting:
    """qemu's first line: what it is (``version``, ``capabilities``)."""

    qmp: Mapping[str, Any]


@dataclass(frozen=True)
class Return:
    """A command's success: its ``return`` value."""

    id: int | None
    value: Any


@dataclass(frozen=True)
class ErrorReply:
    """A command's failure: qemu's error class and its sentence."""

    id: int | None
    error_class: str
    desc: str


@dataclass(frozen=True)
class Event:
    """Something qemu tells unasked: a STOP, a SHUTDOWN, a device that went..."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


Message = Greeting | Return | ErrorReply | Event


def command(name: str, arguments: Mapping[str, Any] | None = None,
            call_id: int | None = None) -> bytes:
    """The line that runs command ``name``; its reply carries ``call_id`` back."""
    request: dict[str, Any] = {"execute": name}
    if call_id is not None:
        request["id"] = call_id
    if arguments:
        request["arguments"] = dict(arguments)
    return json.dumps(request).encode() + b"\n"


def decode(line: bytes) -> Any:
    """The JSON value of one line; ValueError if it is too long or not JSON."""
    if len(line) > MAX_LINE:
        raise ValueError(f"a QMP line longer than {MAX_LINE} bytes")
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("a QMP line nested too deep") from None


def message(value: Any) -> Message | None:
    """What a decoded line says; None if it is no QMP message."""
    if not isinstance(value, dict):
        return None
    if "event" in value:
        data = value.get("data")
        return Event(str(value["event"]), data if isinstance(data, dict) else {})
    call_id = value.get("id")
    if not isinstance(call_id, int) or isinstance(call_id, bool):
        call_id = None
    if "error" in value:
        error = value["error"] or {}
        if not isinstance(error, dict):
            return ErrorReply(call_id, "", str(error))
        return ErrorReply(call_id, str(error.get("class", "")), str(error.get("desc", error)))
    if "return" in value:
        return Return(call_id, value["return"])
    if "QMP" in value:
        qmp = value["QMP"]
        return Greeting(qmp if isinstance(qmp, dict) else {})
    return None


def parse(line: bytes) -> Message | None:
    """What one line says (``decode`` then ``message``)."""
    return message(decode(line))
