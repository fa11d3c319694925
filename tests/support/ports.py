"""Ports for the xends the tests start: free when handed out, apart between the
workers of one run, and not handed out again while a xend may still hold them."""

from __future__ import annotations

import collections
import os
import random
import socket

CONSOLE_SPAN = 128

# Ports this process handed out lately, as (base, span): a xend being torn down in the
# background, or one a module shares, keeps its ports while the next xend is made.
_handed_out: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)


def _worker_band(low: int, high: int) -> tuple[int, int]:
    """This pytest-xdist worker's share of ``low``..``high``, so that xends of workers
    running side by side never get the same ports (the whole of it without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (high - low) // max(count, 1)
    return low + index * width, low + (index + 1) * width


def free_port_base(span: int = 1, low: int = 20000, high: int = 30000) -> int:
    """A random free port range below the kernel's ephemeral range (32768 and up), so
    that no outgoing connection takes the port between this check and xend's bind; in
    this worker's band and apart from the ranges handed out lately."""
    low, high = _worker_band(low, high)
    for _ in range(10000):
        base = random.randrange(low, high - span)
        if any(base < other + size and other < base + span for other, size in _handed_out):
            continue
        try:
            for port in range(base, base + span):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.append((base, span))
        return base
    raise AssertionError(f"no {span} free ports in a row between {low} and {high}")


def free_port() -> int:
    """A free port for a xend's HTTP or debug listener (apart from console ranges)."""
    return free_port_base(low=12000, high=20000)
