"""Waiting for a qemu to end (hypervisor/qemu/process.py ``wait_gone``), with a tiny
process in qemu's place: one this xend launched is reaped once it exits, one a previous
xend launched (adopted: no Popen) is seen gone, and one that stays is waited for no
longer than asked, then still there; a pid another process now has is not waited for."""

from __future__ import annotations

import subprocess
import sys

from xend_actors.hypervisor.qemu import process

WAIT = 10.0  # for what does happen: only a broken wait takes this long


def child(seconds: float) -> tuple[subprocess.Popen[bytes], int]:
    launched = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    started = process.start_time(launched.pid)
    assert started is not None
    return launched, started


def test_a_qemu_of_ours_is_reaped_once_it_exits() -> None:
    launched, started = child(0.2)
    assert process.wait_gone(launched.pid, started, launched, WAIT)
    assert launched.returncode == 0  # reaped: no zombie left
    assert not process.alive(launched.pid, started)


def test_an_adopted_qemu_is_seen_gone_once_it_exits() -> None:
    launched, started = child(0.2)
    try:
        assert process.wait_gone(launched.pid, started, None, WAIT)
        assert not process.alive(launched.pid, started)
    finally:
        launched.wait()


def test_one_that_stays_is_waited_for_no_longer_than_asked() -> None:
    launched, started = child(60)
    try:
        assert not process.wait_gone(launched.pid, started, launched, 0.1)
        assert process.alive(launched.pid, started) and launched.returncode is None
    finally:
        launched.kill()
        launched.wait()


def test_a_pid_now_of_another_process_is_not_waited_for() -> None:
    launched, started = child(60)  # as if the adopted qemu's pid had been reused
    try:
        assert process.wait_gone(launched.pid, started - 1, None, WAIT)
    finally:
        launched.kill()
        launched.wait()
