"""``Layered``: each mapping made by ``updated`` reads as its source dict did then, in
the same order, and none changes once made (a reader may hold it as long as it likes)."""

from __future__ import annotations

import random

from xend_actors.layered import Layered


def test_each_update_reads_as_the_source_in_its_order() -> None:
    rng = random.Random(16)
    for _ in range(25):
        source: dict[int, float] = {}
        layered: Layered[int, float] = Layered()
        for _ in range(rng.randint(1, 200)):
            keys = rng.sample(range(60), rng.randint(1, 4))
            for key in keys:  # each key changed once between two updates
                if rng.random() < 0.7:
                    source[key] = rng.random()
                else:
                    source.pop(key, None)
            layered = layered.updated(source, keys)
            assert list(layered.items()) == list(source.items())
            assert list(layered.values()) == list(source.values())
            assert len(layered) == len(source)
            for key in range(62):
                assert (key in layered) == (key in source)
                assert layered.get(key) == source.get(key)


def test_a_published_mapping_never_changes() -> None:
    source = {1: "a", 2: "b"}
    first = Layered[int, str]().updated(source, [1, 2])
    source[2] = "c"
    del source[1]
    source[3] = "d"
    second = first.updated(source, [1, 2, 3])
    assert dict(first) == {1: "a", 2: "b"}
    assert list(second.items()) == [(2, "c"), (3, "d")]


def test_a_key_removed_then_put_back_comes_last() -> None:
    source = {n: str(n) for n in range(5)}
    layered = Layered[int, str]().updated(source, source)
    del source[1]
    layered = layered.updated(source, [1])
    source[1] = "back"
    layered = layered.updated(source, [1])
    assert list(layered) == [0, 2, 3, 4, 1] == list(source)
