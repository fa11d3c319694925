"""glibc's heap under a thread per connection: few arenas, handed back after a burst.

glibc gives a thread that finds the arenas busy an arena of its own, up to eight per
core, and each keeps what a burst grew it to: 40 concurrent large posts took xend
from 44 MB to 685 MB for good. ``limit_arenas`` (at start, before the threads) keeps
them to ``ARENAS``; ``trim`` gives the free pages of every arena back to the system.
Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
ARENAS = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas() -> None:
    libc = _libc()
    if libc is not None and not libc.mallopt(M_ARENA_MAX, ARENAS):
        log.warning("mallopt(M_ARENA_MAX, %d) failed: memory may not come back", ARENAS)


def trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
