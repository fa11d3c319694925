"""The fencing watchdog on the qemu driver: a xend killed with ``kill -9`` leaves its
guests' qemus running; the watchdog (xend-fence, driven here as a pool member drives it)
kills the guarded ones' qemus by their recorded start time and removes their folders,
and the next xend finds them gone and the others adopted."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.qemu import QemuXend
from tests.support.processes import process_gone, wait_for
from xend_actors import sxp
from xend_actors.config import load_config
from xend_actors.pool.watchdog_client import FenceWatchdog, take_fenced


def test_the_watchdog_kills_a_guarded_qemu_of_a_dead_xend_and_leaves_the_others(
    qemu_xend: Callable[..., QemuXend],
) -> None:
    xend = qemu_xend()  # of its own: it is killed
    guarded = sxp.child_value(xend.create_vm("guarded", start=False), "id")
    kept = sxp.child_value(xend.create_vm("kept", start=False), "id")
    guarded_pid, kept_pid = xend.qemu_pid(guarded), xend.qemu_pid(kept)
    watchdog = FenceWatchdog(load_config(xend.home.config_file))
    watchdog.guard("guarded")
    watchdog.deadline(1.0)
    xend.home.kill9()
    watchdog.close()
    wait_for(lambda: process_gone(guarded_pid), 30, "the guarded qemu killed")
    assert not xend.state_file(guarded).parent.exists()
    assert not process_gone(kept_pid)
    records = []
    wait_for(lambda: records.extend(take_fenced(xend.home.run_dir)) or records, 10)
    assert records[0].domains == (("guarded", int(guarded)),)

    xend.start()
    assert "guarded" not in xend.names() and "kept" in xend.names()
    assert xend.qemu_pid(kept) == kept_pid  # adopted, not restarted
