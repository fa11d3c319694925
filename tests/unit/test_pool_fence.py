"""The fence's clock: it fences half a TTL after the last renewal that worked (counted
from when it was sent), once, on its own thread, and not while renewals keep working."""

from __future__ import annotations

import time

from xend_actors.pool.fence import Fence

TTL = 0.4


def started(acts: list[float]) -> Fence:
    fence = Fence(TTL, lambda why: acts.append(time.monotonic()))
    fence.start()
    return fence


def test_no_renewal_fences_half_a_ttl_after_the_start_once() -> None:
    acts: list[float] = []
    begun = time.monotonic()
    fence = started(acts)
    try:
        time.sleep(TTL * 2)
        assert len(acts) == 1 and fence.fenced
        assert TTL / 2 <= acts[0] - begun <= TTL / 2 + 0.1
    finally:
        fence.stop()


def test_renewals_keep_it_off_and_the_clock_counts_from_the_last_one_sent() -> None:
    acts: list[float] = []
    fence = started(acts)
    try:
        for _ in range(10):
            fence.renewed(time.monotonic())
            time.sleep(TTL / 8)
        assert acts == [] and not fence.fenced
        sent = time.monotonic() - TTL / 8  # a renewal sent a while ago, answered now
        fence.renewed(sent)
        deadline = time.time() + TTL
        while not acts and time.time() < deadline:
            time.sleep(0.01)
        assert acts and TTL / 2 - 0.02 <= acts[0] - sent <= TTL / 2 + 0.1
    finally:
        fence.stop()


def test_it_stays_fenced_until_rejoined_and_then_counts_again() -> None:
    acts: list[float] = []
    fence = started(acts)
    try:
        time.sleep(TTL)
        fence.renewed(time.monotonic())  # a late renewal does not undo the fence
        time.sleep(TTL / 4)
        assert len(acts) == 1 and fence.fenced
        fence.rejoined(time.monotonic())
        assert not fence.fenced
        time.sleep(TTL)
        assert len(acts) == 2
    finally:
        fence.stop()


def test_now_fences_at_once_and_only_once() -> None:
    acts: list[float] = []
    fence = started(acts)
    try:
        fence.renewed(time.monotonic())
        fence.now("the lease expired")
        fence.now("again")
        assert len(acts) == 1 and fence.fenced
    finally:
        fence.stop()


def test_a_renewal_sent_after_the_fence_was_due_does_not_put_it_off() -> None:
    # A xend woken from a hang: its lease thread renews before its fence thread runs.
    now = [100.0]
    acts: list[str] = []
    fence = Fence(TTL, acts.append, clock=lambda: now[0])
    now[0] += TTL / 2 + 0.01
    fence.renewed(now[0])  # the lease still lived: etcd renewed it
    fence.start()
    try:
        deadline = time.monotonic() + 2
        while not acts and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acts) == 1 and fence.fenced
    finally:
        fence.stop()
