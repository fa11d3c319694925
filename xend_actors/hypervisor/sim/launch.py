"""Starting xend-simhv for xend: start it unless one already answers, and wait for it.

A running xend-simhv is left alone, with its domains and its own memory setting, as
Xen outlives a xend restart. A new one runs detached in its own session, so it
outlives the xend that started it (even ``kill -9``); a dead one's socket file is
removed by the new one, under the lock of its pid file, so two launchers racing
cannot remove each other's live socket. A xend whose start fails stops the xend-simhv
that start launched (``stop_launched``), and only that one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from xend_actors.errors import HypervisorError, XendError
from xend_actors.hypervisor import detached
from xend_actors.hypervisor.sim.driver import ask

POLL_INTERVAL = 0.02
LOG_TAIL_BYTES = 2000
STOP_TIMEOUT = 10.0


def ensure_simhv(socket_path: Path, *, memory_mb: int, cpus: int, log_file: Path,
                 pid_file: Path, taps: bool = False, first_domid: int = 1,
                 timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Make sure an xend-simhv answers on ``socket_path``; start one if none does.
    Returns the process it started, None if one was running already; a new one gives
    domain ids from ``first_domid`` on."""
    if simhv_answers(socket_path):
        return None
    socket_path, log_file, pid_file = (p.absolute() for p in (socket_path, log_file, pid_file))
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [*simhv_command(), "--socket", str(socket_path), "--memory", str(memory_mb),
               "--cpus", str(cpus), "--pid-file", str(pid_file), "--first-domid",
               str(first_domid), *(["--taps"] if taps else [])]
    process = detached.start(command, log_file)
    outcome = detached.wait_until(process, lambda: simhv_answers(socket_path),
                                  timeout=timeout, poll=POLL_INTERVAL)
    if outcome is detached.Outcome.EXITED:
        if simhv_answers(socket_path):  # another launcher's xend-simhv won the race
            return None
        raise HypervisorError(f"xend-simhv exited with status {process.returncode} before it "
                              f"answered on {socket_path}: {_tail(log_file)}")
    if outcome is detached.Outcome.LATE:
        raise HypervisorError(f"xend-simhv (pid {process.pid}) did not answer on "
                              f"{socket_path} within {timeout:g} s: {_tail(log_file)}")
    return process


def stop_launched(process: subprocess.Popen[bytes]) -> None:
    """Stop an xend-simhv ``ensure_simhv`` started (SIGTERM: it removes its socket and pid
    file), killed if it does not go within ``STOP_TIMEOUT``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()


def simhv_answers(socket_path: Path, timeout: float = 1.0) -> bool:
    """Whether an xend-simhv answers a ping on ``socket_path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            return ask(sock, "ping", {}) == "xend-simhv"
    except (OSError, ValueError, XendError):
        return False


def simhv_command() -> list[str]:
    """The installed ``xend-simhv`` script beside this Python, else the module."""
    script = shutil.which("xend-simhv", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "xend_actors.hypervisor.sim.server"]


def _tail(log_file: Path) -> str:
    try:
        text = detached.tail(log_file, LOG_TAIL_BYTES)
    except OSError as e:
        return f"(cannot read {log_file}: {e.strerror})"
    return f"the end of {log_file} says:\n{text}" if text else f"{log_file} is empty"
