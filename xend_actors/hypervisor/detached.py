"""Starting a hypervisor process detached from xend, and waiting until it is ready.

xend-simhv and each qemu outlive the xend that started them (even ``kill -9``), as Xen
outlives xend: such a process runs in a session of its own, in ``/``, with its input
from /dev/null and its output appended to a log file. A thread of xend's reaps it
whenever it exits, so it never lingers as a zombie of xend; its ``Popen`` still tells
its status. Whoever waits for it to be ready learns whether it became ready, exited
first or is late, and can quote the end of its log.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path

from xend_actors.errors import HypervisorError


class Outcome(Enum):
    """How waiting for a process to be ready ended."""

    READY = "ready"
    EXITED = "exited"  # before it was ready: its Popen's returncode says how
    LATE = "late"  # still not ready at the deadline, and still running


def start(argv: Sequence[str], log_file: Path,
          pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached, its output appended to ``log_file``, with the open files
    ``pass_fds`` too; returns at once. HypervisorError if it cannot be run."""
    with open(log_file, "ab") as log:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd="/", pass_fds=pass_fds)
        except OSError as error:
            raise HypervisorError(f"cannot run {argv[0]}: {error.strerror}") from None
    threading.Thread(target=process.wait, name=f"reaper-{process.pid}", daemon=True).start()
    return process


def wait_until(process: subprocess.Popen[bytes], ready: Callable[[], bool], *,
               timeout: float, poll: float) -> Outcome:
    """Ask ``ready()`` every ``poll`` seconds until it holds, the process exits, or
    ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return Outcome.READY
        if process.poll() is not None:
            return Outcome.EXITED
        if time.monotonic() > deadline:
            return Outcome.LATE
        time.sleep(poll)


def tail(log_file: Path, size: int) -> str:
    """The last ``size`` bytes of ``log_file`` as text, stripped; OSError if unreadable."""
    with open(log_file, "rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - size))
        return log.read().decode(errors="replace").strip()
