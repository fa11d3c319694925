"""What a thread per domain costs besides its memory: the futex hash xend asks for, and
the proxies of many actors of one class.

``spread_futexes`` runs in a child process of its own (the hash is the process's), which
reads its hash's width back from the kernel; on a kernel without private futex hashes
(before 6.16) it must say so rather than fail. Proxies made for many actors of one class
still reach each its own actor, and a name the class did not have when first looked at
is found.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pykka
import pytest
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import proxy_of
from xend_actors.limits import FUTEX_SLOTS

_PR_FUTEX_HASH, _GET_SLOTS = 78, 2


def _kernel_has_private_futex_hash() -> bool:
    return int(ctypes.CDLL(None, use_errno=True).prctl(_PR_FUTEX_HASH, _GET_SLOTS, 0, 0, 0)) >= 0


def test_xend_widens_its_futex_hash_or_says_the_kernel_has_none() -> None:
    child = textwrap.dedent(f"""
        import ctypes, threading
        from xend_actors.limits import spread_futexes
        threading.Thread(target=lambda: None).start()  # the kernel's default hash is made
        spread = spread_futexes()
        slots = ctypes.CDLL(None, use_errno=True).prctl({_PR_FUTEX_HASH}, {_GET_SLOTS}, 0, 0, 0)
        print(spread, slots)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60, check=True)
    spread, slots = done.stdout.split()
    if _kernel_has_private_futex_hash():
        assert (spread, int(slots)) == ("True", FUTEX_SLOTS)
    else:
        assert spread == "False"


class _Counter(pykka.ThreadingActor):
    def __init__(self, start: int) -> None:
        super().__init__()
        self._value = start

    def value(self) -> int:
        return self._value


class _CounterProxy(ActorMemberMixin, pykka.ActorProxy[_Counter]):
    value = proxy_method(_Counter.value)


@pytest.fixture
def counters() -> Iterator[list[pykka.ActorRef[_Counter]]]:
    refs = [_Counter.start(n) for n in range(50)]
    yield refs
    for ref in refs:
        ref.stop()


def test_proxies_of_one_class_each_reach_their_own_actor(
        counters: list[pykka.ActorRef[_Counter]]) -> None:
    proxies = [proxy_of(ref, _CounterProxy) for ref in counters]
    assert [proxy.value().get(timeout=10) for proxy in proxies] == list(range(50))


def test_a_name_an_actor_gained_after_its_class_was_looked_at_is_found(
        counters: list[pykka.ActorRef[_Counter]]) -> None:
    proxy_of(counters[0], _CounterProxy).value().get(timeout=10)  # the class looked at
    actor = counters[1]._actor_weakref()
    assert actor is not None
    actor.extra = lambda: "extra"  # type: ignore[attr-defined]
    proxy = counters[1].proxy()
    assert proxy.extra().get(timeout=10) == "extra"
