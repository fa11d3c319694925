"""The one mapping of SXP to JSON, and back: what a client asking for JSON is sent.

Every reply a program gets as SXP is sent as the JSON of the same value
(docs/json.md), so whatever xend answers in SXP it answers in JSON, and ``from_json``
gives back the very SXP value (the tests check both ways). An atom is a JSON string
(SXP has no numbers: ``(id 5)`` holds the string ``5``). A list is:

- an object of one member, ``{"NAME": REST}``, when its first item is an atom and a
  list follows it (an element: ``(domain (id 5) ...)``, ``(vif (idx 0) ...)``);
- else an array of its items, mapped alike (``(web1 web2)``, ``((domain ...) ...)``,
  ``(evtchn 22 2)``, ``()``).

The rest of an element (its items after the name) is:

- a JSON string when it is one atom: ``(name web1)`` → ``"name": "web1"``;
- an object ``{"FIELD": REST, ...}`` when it is lists each named by an atom and no name
  comes twice: ``(console (status listening) (port 9601))`` → ``"console": {"status":
  "listening", "port": "9601"}``;
- else an array of its items, each mapped as a value: ``(devices (vif ...) (vif ...))``
  → ``"devices": [{"vif": {...}}, {"vif": {...}}]``; ``(devices)`` → ``"devices": []``.

An error reply is ``{"error": MESSAGE}`` instead of ``(xend.err MESSAGE)``.
"""

from __future__ import annotations

import json
from typing import Any

from xend_actors import sxp

Json = str | list[Any] | dict[str, Any]


def to_json(value: object) -> Json:
    """The JSON form of the SXP ``value``."""
    if not isinstance(value, list | tuple):
        return _atom(value)
    if value and isinstance(value[0], str) and any(
            isinstance(item, list | tuple) for item in value[1:]):
        return {_atom(value[0]): _rest(value[1:])}
    return [to_json(item) for item in value]


def _rest(items: list | tuple) -> Json:
    if len(items) == 1 and not isinstance(items[0], list | tuple):
        return _atom(items[0])
    if items and _fields(items):
        return {_atom(item[0]): _rest(item[1:]) for item in items}
    return [to_json(item) for item in items]


def _fields(items: list | tuple) -> bool:
    """Whether ``items`` are lists each named by an atom, no name twice."""
    names = set()
    for item in items:
        if not (isinstance(item, list | tuple) and item and isinstance(item[0], str)) \
                or item[0] in names:
            return False
        names.add(item[0])
    return True


def _atom(value: object) -> str:
    if isinstance(value, str):
        return str.__str__(value)  # a str enum is its value
    parsed = sxp.parse(sxp.show(value))  # an int, a float: as SXP prints it and reads back
    return parsed if isinstance(parsed, str) else sxp.show(value)


def from_json(value: object) -> sxp.Value:
    """The SXP value whose JSON form is ``value`` (``to_json``'s inverse)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((name, rest),) = value.items()
        return [name, *_unrest(rest)]
    if isinstance(value, list):
        return [from_json(item) for item in value]
    raise ValueError(f"not the JSON form of an SXP value: {str(value)[:80]}")


def _unrest(rest: object) -> list[sxp.Value]:
    if isinstance(rest, str):
        return [rest]
    if isinstance(rest, dict):
        return [[name, *_unrest(item)] for name, item in rest.items()]
    if isinstance(rest, list):
        return [from_json(item) for item in rest]
    raise ValueError(f"not the JSON form of an SXP element: {str(rest)[:80]}")


def dumps(value: object) -> str:
    """The JSON text of the SXP ``value``."""
    return json.dumps(to_json(value))


def error(message: str) -> str:
    """The JSON text of an error reply."""
    return json.dumps({"error": message})
