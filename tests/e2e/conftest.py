"""The qemu fixtures for every e2e module: the test guest, xends with the qemu driver.

- ``qemu``: a ``QemuXend`` on the qemu xend that the tests of this module share, with
  Domain-0 only when the test begins; every domain (so every qemu) it leaves is destroyed
  after it.
- ``qemu_xend``: a factory of qemu xends of the test's own (``qemu_xend(extra)``), for
  tests that kill or restart xend or need another config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.qemu import QEMU_CONFIG, Guest, QemuXend, build_guest
from tests.support.home import XendHome
from tests.support.sharing import Reaper, SharedXend


@pytest.fixture(scope="session")
def guest() -> Guest:
    """The test guest, built (or found in its cache) by tests/guest/build."""
    return build_guest()


@pytest.fixture
def qemu_xend(guest: Guest,
              xend_home: Callable[..., XendHome]) -> Iterator[Callable[..., QemuXend]]:
    """A factory of started xends with the qemu driver, of the test's own."""
    made: list[QemuXend] = []

    def make(extra: str = "(qemu-accel tcg)\n") -> QemuXend:
        xend = QemuXend(xend_home("(hypervisor qemu)\n" + extra), guest)
        made.append(xend)
        xend.start()
        return xend

    yield make
    for xend in made:
        xend.close()


@pytest.fixture(scope="module")
def shared_qemu_xend(reaper: Reaper, guest: Guest) -> Iterator[SharedXend]:
    shared = SharedXend(reaper, QEMU_CONFIG, make=lambda home: QemuXend(home, guest))
    yield shared
    shared.close()


@pytest.fixture
def qemu(shared_qemu_xend: SharedXend) -> Iterator[QemuXend]:
    """The module's shared qemu xend, with Domain-0 only; what the test leaves is destroyed."""
    xend = shared_qemu_xend.take()
    assert isinstance(xend, QemuXend)
    yield xend
    shared_qemu_xend.give_back()
