"""Which way a driver's domains move is decided by type (transfer/drivers.py): each real
driver has exactly one of the two state protocols."""

from __future__ import annotations

from typing import cast

import pytest

from xend_actors.errors import XendError
from xend_actors.hypervisor.base import Driver, PagedState, StreamState
from xend_actors.hypervisor.qemu.driver import QemuDriver
from xend_actors.hypervisor.sim.driver import SimDriver
from xend_actors.transfer.drivers import movable


def test_the_sim_moves_pages_and_qemu_a_stream() -> None:
    assert issubclass(SimDriver, PagedState) and not issubclass(SimDriver, StreamState)
    assert issubclass(QemuDriver, StreamState) and not issubclass(QemuDriver, PagedState)


@pytest.mark.parametrize(("what", "text"), [
    ("migration", "migration is not available yet with the object hypervisor driver"),
    ("save and restore", "save and restore are not available yet with the object "
                         "hypervisor driver"),
])
def test_a_driver_that_moves_no_state_cannot_transfer(what: str, text: str) -> None:
    with pytest.raises(XendError) as caught:
        movable(cast(Driver, object()), what)  # a driver with neither protocol
    assert (caught.value.status, caught.value.message) == (501, text)
