"""The Hypervisor actor: host-wide driver calls and the driver's notifications.

It owns the driver's lifetime (opened by ``open_driver``, closed when the actor
stops). Per-domain calls go straight from each Domain actor to the driver, which
is thread-safe, so one slow domain never holds up the host-wide calls here.
"""

from __future__ import annotations

import pykka

from xend_actors.config import Hypervisor as HypervisorKind
from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.hypervisor.base import Driver, GuestMessage, Notification
from xend_actors.node import PhysInfo
from xend_actors.trace import TracedActor


def open_driver(config: XendConfig) -> Driver:
    """The configured driver, its hypervisor started if it is not running."""
    if config.hypervisor is HypervisorKind.SIM:
        from xend_actors.hypervisor.sim.driver import SimDriver
        from xend_actors.hypervisor.sim.launch import ensure_simhv

        socket_path = config.run_dir / "simhv.sock"
        ensure_simhv(socket_path, memory_mb=config.sim_memory_mb, cpus=config.sim_cpus,
                     log_file=config.logfile.parent / "xend-simhv.log",
                     pid_file=config.run_dir / "simhv.pid", taps=config.sim_taps)
        return SimDriver(socket_path)
    if config.hypervisor is HypervisorKind.QEMU:
        from xend_actors.hypervisor.qemu.accel import AccelMode
        from xend_actors.hypervisor.qemu.driver import QemuDriver

        return QemuDriver(config.run_dir, accel=AccelMode(config.qemu_accel))
    raise XendError(f"the {config.hypervisor.value} driver is not available yet")


class Hypervisor(TracedActor):
    def __init__(self, driver: Driver) -> None:
        super().__init__()
        self._driver = driver

    def on_stop(self) -> None:
        self._driver.close()

    def watch(self, table: pykka.ActorProxy) -> None:
        """Tell ``table`` each domain change the driver reports (Xen's VIRQ_DOM_EXC) and
        each control message a guest sends."""
        def notify(notification: Notification) -> None:
            if isinstance(notification, GuestMessage):
                table.guest_message(notification.domid, notification.message)
            else:
                table.domain_changed(notification.domid)

        self._driver.watch(notify)

    def physinfo(self) -> PhysInfo:
        return self._driver.physinfo()

    def dmesg(self, clear: bool = False) -> str:
        return self._driver.dmesg(clear)

    def set_bvt_ctx_allow(self, ctx_allow: int) -> None:
        self._driver.set_bvt_ctx_allow(ctx_allow)

    def set_rrobin_slice(self, slice_ns: int) -> None:
        self._driver.set_rrobin_slice(slice_ns)
