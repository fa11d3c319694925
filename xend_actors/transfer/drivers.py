"""Which way a driver's domains move, decided by type once per transfer.

A driver has one of ``hypervisor/base.py``'s two state protocols beside ``Driver``: a
``PagedDriver`` (the sim) holds a domain's state as bytes and its memory as pages; a
``StreamDriver`` (qemu) moves it as a stream. ``movable`` says which, and each path
of a transfer is typed for its kind.
"""

from __future__ import annotations

from typing import Protocol

from xend_actors.errors import XendError
from xend_actors.hypervisor.base import Driver, PagedState, StreamState


class PagedDriver(Driver, PagedState, Protocol):
    """A driver whose domain state is bytes and pages (the sim)."""


class StreamDriver(Driver, StreamState, Protocol):
    """A driver whose domain state is a stream (qemu)."""


MovableDriver = PagedDriver | StreamDriver


def movable(driver: Driver, what: str = "save and restore") -> MovableDriver:
    """``driver`` as the kind of driver it is; 501 for ``what`` (``migration``, ``save
    and restore``) if it moves no domain state."""
    if isinstance(driver, StreamState):
        return driver
    if isinstance(driver, PagedState):
        return driver
    raise XendError(f"{what} {'is' if what == 'migration' else 'are'} not available yet "
                    f"with the {type(driver).__name__} hypervisor driver", status=501)
