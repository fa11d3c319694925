"""The one mapping of SXP to JSON, and back: what a client asking for JSON is sent.

Every reply a program gets as SXP is sent as the JSON of the same value
(docs/json.md), so whatever xend answers in SXP it answers in JSON, and ``from_json``
gives back the very SXP value (the tests check both ways). An atom is a JSON string
(SXP has no numbers: ``(id 5)`` holds the string ``5``). A list is:

- an object of one member, ``{"NAME": REST}``, when its first item is an atom and a
  list follows it (an element: ``(domain (id 5) ...)``, ``(vif (idx 0) ...)``);
- else an array of its items, mapped alike (``(web1 web2)``, ``((domain ...) ...)``).

The rest of an element (its items after the name) is:

- a JSON string when it is one atom: ``(name web1)`` → ``"name": "web1"``;
- an object ``{"FIELD": REST, ...}`` when it is lists each named by an atom, no name
  twice: ``(console (status listening) (port 9601))`` → ``"console": {"status":
  "listening", "port": "9601"}``;
- else an array of its items, where a list named by an atom is ``{"NAME": REST}`` and
  anything else maps as above: ``(evtchn 22 2)`` → ``"evtchn": ["22", "2"]``,
  ``(devices)`` → ``[]``.

The elements whose items are a collection (``COLLECTIONS``: a domain's ``devices``, a
config's ``vm`` with its ``device`` fields, the pool's ``hosts`` and ``domains``) always
take the array, so that they keep
their shape whether they hold one thing or two of a kind: ``(devices (vbd ...))`` →
``"devices": [{"vbd": {...}}]``.

An error reply is ``{"error": MESSAGE}`` instead of ``(xend.err MESSAGE)``.
"""

from __future__ import annotations

import json
from typing import Any

from xend_actors import sxp

Json = str | list[Any] | dict[str, Any]

# Elements that hold a collection: their items are an array even when there is one.
COLLECTIONS = frozenset({"devices", "vm", "hosts", "domains"})


def to_json(value: object) -> Json:
    """The JSON form of the SXP ``value``."""
    if not isinstance(value, list | tuple):
        return _atom(value)
    if value and isinstance(value[0], str) and any(
            isinstance(item, list | tuple) for item in value[1:]):
        return {_atom(value[0]): _element(value)}
    return [to_json(item) for item in value]


def _rest(items: list | tuple, collection: bool = False) -> Json:
    if len(items) == 1 and not isinstance(items[0], list | tuple) and not collection:
        return _atom(items[0])
    if items and not collection and all(map(_named, items)) and \
            len({item[0] for item in items}) == len(items):
        return {_atom(item[0]): _element(item) for item in items}
    return [{_atom(item[0]): _element(item)} if _named(item) else to_json(item)
            for item in items]


def _element(item: list | tuple) -> Json:
    """The REST of the element ``item``."""
    return _rest(item[1:], item[0] in COLLECTIONS)


def _named(item: object) -> bool:
    """Whether ``item`` is a list named by an atom: ``(NAME ...)``."""
    return isinstance(item, list | tuple) and bool(item) and isinstance(item[0], str)


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
