"""Starting a process detached from xend (hypervisor/detached.py), with a tiny Python
process in qemu's or xend-simhv's place: it runs in a session of its own, in /, reading
nothing, writing to the end of its log; waiting for it tells ready, exited or late; it
is reaped whenever it exits."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from xend_actors.errors import HypervisorError
from xend_actors.hypervisor import detached
from xend_actors.hypervisor.detached import Outcome

WAIT = 10.0  # for what does happen: only a broken launcher takes this long
POLL = 0.01


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(POLL)


def test_it_runs_apart_from_xend_and_is_ready_once_the_condition_holds(tmp_path: Path) -> None:
    log, said = tmp_path / "log", tmp_path / "said"
    log.write_text("an earlier run\n")
    process = detached.start(python(
        "import json, os, sys, time\n"
        "print('starting', flush=True)\n"
        "where = [os.getsid(0), os.getpid(), os.getcwd(), sys.stdin.read()]\n"
        f"with open({str(said)!r} + '.new', 'w') as out:\n"
        "    json.dump(where, out)\n"
        f"os.rename({str(said)!r} + '.new', {str(said)!r})  # whole, or not there\n"
        "time.sleep(60)\n"), log)
    try:
        outcome = detached.wait_until(process, said.exists, timeout=WAIT, poll=POLL)
        assert outcome is Outcome.READY
        session, pid, cwd, stdin = json.loads(said.read_text())
        assert (session, cwd, stdin) == (pid, "/", "")
        assert pid == process.pid and os.getsid(0) != session
        wait_for(lambda: "starting" in log.read_text(), "the process's output")
        assert log.read_text() == "an earlier run\nstarting\n"
    finally:
        process.kill()
        process.wait(WAIT)


def test_one_that_exits_first_is_told_with_its_status_and_its_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = detached.start(python("import sys; print('no memory for you'); sys.exit(3)"), log)
    outcome = detached.wait_until(process, lambda: False, timeout=WAIT, poll=POLL)
    assert outcome is Outcome.EXITED
    assert process.returncode == 3
    assert detached.tail(log, 10) == "y for you"  # the last 10 bytes, stripped
    assert detached.tail(log, 1000) == "no memory for you"


def test_one_neither_ready_nor_gone_by_the_deadline_is_late(tmp_path: Path) -> None:
    process = detached.start(python("import time; time.sleep(60)"), tmp_path / "log")
    try:
        began = time.monotonic()
        outcome = detached.wait_until(process, lambda: False, timeout=0.2, poll=POLL)
        assert outcome is Outcome.LATE
        assert time.monotonic() - began >= 0.2
        assert process.poll() is None
    finally:
        process.kill()


def test_it_is_reaped_when_it_exits_even_if_nobody_waits(tmp_path: Path) -> None:
    process = detached.start(python("pass"), tmp_path / "log")
    wait_for(lambda: process.returncode is not None, "the reaper to reap it")
    assert process.returncode == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(process.pid, os.WNOHANG)  # no zombie left to reap


def test_a_program_that_cannot_run_is_a_hypervisor_error(tmp_path: Path) -> None:
    with pytest.raises(HypervisorError, match=r"^cannot run /nonexistent/qemu: No such file"):
        detached.start(["/nonexistent/qemu"], tmp_path / "log")


def test_an_unreadable_log_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        detached.tail(tmp_path / "missing", 100)
