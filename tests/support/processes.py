"""Processes the tests start and wait for: the installed commands, waiting on a
condition with a deadline, and making sure nothing is left running."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

STOP_TIMEOUT = 60.0
def xend_command() -> list[str]:
    """The installed ``xend`` script beside this Python, else the module."""
    script = shutil.which("xend", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "xend_actors.cli"]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.05)

# --- processes ---------------------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited, at most ``timeout`` s; whether it did."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while not process_gone(pid):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([handle], [], [], min(left, 1.0))
        return True
    finally:
        os.close(handle)


def stop_process(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL it after ``timeout`` s. Whether it
    stopped on the SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10)
    return False


def kill_guests(run_dir: Path) -> None:
    """Kill every qemu a xend left in ``run_dir`` (they outlive xend on purpose)."""
    for state in (run_dir / "qemu").glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(state.read_text())["pid"])
            if pid and "qemu" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10)
