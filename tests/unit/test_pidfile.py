"""The pid file's lock decides whether xend runs, not the file's presence."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xend_actors.errors import Conflict
from xend_actors.pidfile import PidFile


def test_acquire_writes_pid_and_release_removes(tmp_path: Path) -> None:
    pidfile = PidFile(tmp_path / "run" / "xend.pid")
    assert pidfile.running_pid() is None
    with pidfile:
        assert pidfile.path.read_text() == f"{os.getpid()}\n"
    assert not pidfile.path.exists()


def test_a_stale_file_without_lock_is_not_running(tmp_path: Path) -> None:
    path = tmp_path / "xend.pid"
    path.write_text("999999\n")
    assert PidFile(path).running_pid() is None
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"


def test_a_locked_file_is_running_and_refuses_a_second_owner(tmp_path: Path) -> None:
    path = tmp_path / "xend.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib; from xend_actors.pidfile import PidFile\n"
         f"p = PidFile(pathlib.Path({str(path)!r})); p.acquire(); print('held', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert PidFile(path).running_pid() == holder.pid
        with pytest.raises(Conflict, match=rf"already running \(pid {holder.pid}\)"):
            PidFile(path).acquire()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert PidFile(path).running_pid() is None


def test_an_owner_that_lets_go_as_another_starts_leaves_it_a_file_that_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The race a kill storm met: the new owner opened the file, then the old one removed
    # it and let go, then the new one took the lock, on a file nobody can find any more.
    path = tmp_path / "xend.pid"
    old = PidFile(path)
    old.acquire()
    real_flock = fcntl.flock
    let_go = []

    def flock_after_the_old_owner_let_go(fd: int, operation: int) -> None:
        if not let_go:
            let_go.append(True)
            old.release()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_old_owner_let_go)
    new = PidFile(path)
    new.acquire()
    monkeypatch.undo()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
        assert new.running_pid() == os.getpid()
        with pytest.raises(Conflict):
            PidFile(path).acquire()
    finally:
        new.release()
