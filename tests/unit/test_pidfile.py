"""The pid file's lock decides whether xend runs, not the file's presence."""

from __future__ import annotations

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
