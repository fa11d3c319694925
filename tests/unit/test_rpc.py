"""rpc.Calls, the calls in flight on one connection: each caller gets its own answer, a
late one a Timeout naming the call, and all of them the lost error when the connection
goes. The test plays the reader thread: it takes each answer and hands it over."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from xend_actors.errors import HypervisorError, NotFound, Timeout, XendError
from xend_actors.hypervisor.rpc import Call, Calls

WAIT = 10.0  # for answers that do come: only a broken Calls takes this long


def make_calls() -> Calls[str]:
    return Calls(late=lambda call, seconds: f"peer did not answer {call} within {seconds:g} s",
                 lost=lambda call: HypervisorError(f"lost the peer; cannot run {call}"))


def answer(calls: Calls[str], call_id: int | None, value: str) -> bool:
    """What a reader thread does with a reply: whether someone was waiting for it."""
    call = calls.take(call_id)
    if call is None:
        return False
    call.future.set_result(value)
    return True


def test_each_caller_gets_the_answer_to_its_own_call_in_any_order() -> None:
    calls = make_calls()
    started: list[Call[str]] = []
    ready = threading.Condition()

    def caller(n: int) -> str:
        call = calls.start(f"call-{n}")
        with ready:
            started.append(call)
            ready.notify()
        return calls.wait(call, WAIT)

    with ThreadPoolExecutor(8) as pool:
        results = [pool.submit(caller, n) for n in range(8)]
        with ready:
            assert ready.wait_for(lambda: len(started) == 8, timeout=WAIT)
        for call in reversed(started):  # answered last to first
            assert answer(calls, call.id, f"answer to {call.name}")
        assert [r.result(WAIT) for r in results] == [f"answer to call-{n}" for n in range(8)]


def test_ids_are_distinct_and_the_error_an_answer_carries_is_raised() -> None:
    calls = make_calls()
    first, second = calls.start("create"), calls.start("destroy")
    assert first.id != second.id
    taken = calls.take(second.id)
    assert taken is second
    second.future.set_exception(NotFound("no domain 7"))
    with pytest.raises(NotFound, match="no domain 7"):
        calls.wait(second, WAIT)


def test_a_late_answer_is_a_timeout_naming_the_call_and_is_then_dropped() -> None:
    calls = make_calls()
    call = calls.start("query-status")
    with pytest.raises(Timeout, match=r"^peer did not answer query-status within 0\.05 s$"):
        calls.wait(call, 0.05)
    assert not answer(calls, call.id, "too late")  # nobody waits for it any more
    assert not call.future.done()


def test_answers_with_no_id_or_an_unknown_one_find_nobody() -> None:
    calls = make_calls()
    call = calls.start("ping")
    assert not answer(calls, None, "?")
    assert not answer(calls, call.id + 100, "?")
    assert answer(calls, call.id, "pong")
    assert calls.wait(call, WAIT) == "pong"


def test_a_lost_connection_fails_every_waiting_call_and_every_later_one() -> None:
    calls = make_calls()
    waiting = [calls.start(name) for name in ("pause", "unpause")]
    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(calls.wait, call, WAIT) for call in waiting]
        calls.lose()
        for result, name in zip(results, ("pause", "unpause"), strict=True):
            with pytest.raises(HypervisorError, match=f"lost the peer; cannot run {name}$"):
                result.result(WAIT)
    assert calls.lost
    with pytest.raises(XendError, match=r"cannot run destroy$"):
        calls.start("destroy")
