"""What the host lets xend hold: open files and threads, as a domain needs them.

Each domain costs xend a thread (its Domain actor) and open files (its console's
channel on the sim; more on qemu), so 10,000 domains need some 10,000 files (the usual
hard limit here is 20,000, which a container's root may not raise), and 10,000 of the
host's task ids
(``kernel.pid_max`` is often 32,768, shared by every process). ``raise_open_files``
lifts xend's own limit at start (root may raise its hard limit, up to
``fs.nr_open``); ``no_room_for_domain`` says why a new domain would not fit, so a
create is refused whole, with a message saying which limit to raise, before anything
is made, rather than failing half way for want of a file or a thread.

The check is cheap while far from the limits (an estimate from the number of
domains, and one small read of ``/proc/loadavg``); near the file limit it counts the
open files themselves, at most once a second while the count and the domains made
since leave room (``COUNT_AGE``).

A thread per domain has one more cost on Linux 6.16 and later: a process's private
futex hash starts with 16 buckets on a small host, and every lock a thread waits on
hangs in one of them, so with 10,000 idle Domain threads each hand-off between two
actors walked some 600 waiters (100 us a round trip, not 12). ``spread_futexes``
(at start) gives xend a hash as wide as the threads it may hold.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OPEN_FILES = 65536  # what xend raises its open-file limit to, if it may
FILES_PER_DOMAIN = 4  # at most, on any driver (the sim takes 1)
# Files kept for xend's own work (the store, transfers, the logs, notify deliveries),
# which no domain or connection may take: the web's admission keeps the same reserve.
FILES_SPARE = 64
COUNT_AGE = 1.0  # s a count of the open files stands for, near the limit
TASKS_SPARE = 512  # task ids left to the rest of the host
_NR_OPEN = Path("/proc/sys/fs/nr_open")
_PID_MAX = Path("/proc/sys/kernel/pid_max")
_THREADS_MAX = Path("/proc/sys/kernel/threads-max")
_LOADAVG = Path("/proc/loadavg")
_FDS = Path("/proc/self/fd")
FUTEX_SLOTS = 16384  # a power of two; a few hundred KiB of the kernel's memory
_PR_FUTEX_HASH, _PR_FUTEX_HASH_SET_SLOTS = 78, 1  # linux/prctl.h (6.16)


def raise_open_files(want: int = OPEN_FILES) -> int:
    """Raise this process's open-file limit towards ``want``; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            ceiling = int(_NR_OPEN.read_text())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, ceiling),) * 2)
            return min(want, ceiling)
        except (OSError, ValueError):  # not root: up to the hard limit only
            pass
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


@dataclass(frozen=True)
class _Count:
    """A count of xend's open files: under which limit, beside how many domains, when."""

    limit: int
    domains: int
    in_use: int
    at: float

    def estimate(self, limit: int, domains: int) -> int | None:
        """The files open now, from this count and the domains made since; None once the
        count is too old to go by, or was made under another limit."""
        if limit != self.limit or time.monotonic() - self.at > COUNT_AGE:
            return None
        return self.in_use + max(0, domains - self.domains) * FILES_PER_DOMAIN


_last_count: _Count | None = None  # the DomainTable's thread is the one caller


def no_room_for_domain(domains: int) -> str | None:
    """Why one more domain would not fit beside ``domains``; None if it would."""
    global _last_count
    files, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Far from the limit (a spare's worth beside what the domains may hold), uncounted.
    if files != resource.RLIM_INFINITY and \
            (domains + 1) * FILES_PER_DOMAIN + 2 * FILES_SPARE > files:
        # Near it, the real count, but at most once a ``COUNT_AGE`` while the estimate
        # says there is room: listing 10,000 open files takes 19 ms.
        in_use = None if _last_count is None else _last_count.estimate(files, domains)
        if in_use is None or in_use + FILES_PER_DOMAIN + FILES_SPARE > files:
            in_use = len(os.listdir(_FDS))
            _last_count = _Count(files, domains, in_use, time.monotonic())
        if in_use + FILES_PER_DOMAIN + FILES_SPARE > files:
            return (f"xend has {in_use} files open of the {files} it may (ulimit -n), "
                    f"with {domains} domains: raise the limit to hold more")
    tasks = _tasks_max()
    running = _tasks_running()
    if tasks is not None and running is not None and running + 1 + TASKS_SPARE > tasks:
        return (f"the host runs {running} threads of the {tasks} it may "
                "(kernel.pid_max, kernel.threads-max): each domain takes one of xend's")
    return None


def _tasks_max() -> int | None:
    try:
        return min(int(_PID_MAX.read_text()), int(_THREADS_MAX.read_text()))
    except (OSError, ValueError):
        return None


def _tasks_running() -> int | None:
    """Every thread of the host now (the fourth field of ``/proc/loadavg``)."""
    try:
        return int(_LOADAVG.read_text().split()[3].partition("/")[2])
    except (OSError, ValueError, IndexError):
        return None


def spread_futexes(slots: int = FUTEX_SLOTS) -> bool:
    """Give this process a private futex hash of ``slots`` buckets, so that a hand-off
    between two threads costs the same beside 10 threads or 10,000; False where the
    kernel has no such hash (before 6.16, or not Linux), which hashes futexes globally."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return bool(prctl(_PR_FUTEX_HASH, _PR_FUTEX_HASH_SET_SLOTS, slots, 0, 0) == 0)
