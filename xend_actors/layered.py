"""An immutable mapping made from the one before it by its changes, at a cost that does
not grow with the mapping: how the DomainTable and the Consoles publish their snapshots.

An owner keeps its own ordered ``dict`` (the source) and changes it as it likes; to
publish, it asks the last ``Layered`` for ``updated(source, keys)``, the keys it changed
since. The new mapping shares the last one's base ``dict`` and carries the changes
beside it in three small layers: new values of base keys (kept at their place), base
keys gone, and keys added after the base (in the order they came). Once the layers hold
more than about the square root of the base's size, the next one is copied whole from
the source instead, so a change costs O(√n) and readers look a key up in O(1); copying
the whole dict on each change cost 0.34 ms at 10,000 domains.

The order is the source's, as a ``dict`` keeps it: a changed key keeps its place, a key
removed by one update and put back by a later one comes last (the source must not
move a key between two updates: the DomainTable builds its dict once per publish).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, ValuesView
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MIN_LAYERS = 16  # changes carried before a copy, however small the base


class Layered(Mapping[K, V]):
    """A mapping no one changes once made; ``updated`` makes the next."""

    __slots__ = ("_added", "_base", "_changed", "_gone")

    def __init__(self, base: dict[K, V] | None = None, changed: dict[K, V] | None = None,
                 gone: frozenset[K] = frozenset(), added: dict[K, V] | None = None) -> None:
        self._base: dict[K, V] = {} if base is None else base
        self._changed: dict[K, V] = {} if changed is None else changed
        self._gone = gone
        self._added: dict[K, V] = {} if added is None else added

    def updated(self, source: Mapping[K, V], keys: Iterable[K]) -> Layered[K, V]:
        """This mapping with each of ``keys`` as ``source`` has it now (absent if
        ``source`` lacks it); ``source`` agrees with this mapping on every other key."""
        base = self._base
        changed, gone, added = dict(self._changed), set(self._gone), dict(self._added)
        for key in keys:
            if key in source:
                value = source[key]
                if key in added:
                    added[key] = value
                elif key in base and key not in gone:
                    changed[key] = value
                else:  # new, or put back after it went: last, as in the source
                    added[key] = value
            else:
                changed.pop(key, None)
                added.pop(key, None)
                if key in base:
                    gone.add(key)
        if len(changed) + len(gone) + len(added) > max(_MIN_LAYERS, math.isqrt(len(base))):
            return Layered(dict(source))
        return Layered(base, changed, frozenset(gone), added)

    def __getitem__(self, key: K) -> V:
        if key in self._added:
            return self._added[key]
        if key in self._gone:
            raise KeyError(key)
        if key in self._changed:
            return self._changed[key]
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        return key in self._added or (key not in self._gone and key in self._base)

    def __iter__(self) -> Iterator[K]:
        gone = self._gone
        for key in self._base:
            if key not in gone:
                yield key
        yield from self._added

    def values(self) -> ValuesView[V]:
        return _Values(self)

    def _values(self) -> Iterator[V]:
        gone, changed = self._gone, self._changed
        if not gone and not changed:
            yield from self._base.values()
        else:
            for key, value in self._base.items():
                if key not in gone:
                    yield changed.get(key, value)
        yield from self._added.values()

    def __len__(self) -> int:
        return len(self._base) - len(self._gone) + len(self._added)


class _Values(ValuesView[V]):
    """The values in order, without looking each key up again."""

    _mapping: Layered[object, V]

    def __iter__(self) -> Iterator[V]:
        return self._mapping._values()
