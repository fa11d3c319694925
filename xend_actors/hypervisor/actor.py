"""The Hypervisor actor: the driver's host-wide calls and its notifications.

It owns the driver's lifetime (opened by ``open_driver``, closed when the actor stops)
and makes every driver call that is not about one domain's life: the host's info, the
list and snapshots of domains, making a new empty domain (an id is the host's to give)
and the host-wide scheduler knobs. The DomainTable asks it, and never calls the driver
itself; calls about one domain's life are made by that domain's Domain actor (the
driver is thread-safe), so one slow guest holds up neither this actor nor the table.
The driver's notifications are told to a ``DomainWatcher`` (the table), never asked.
"""

from __future__ import annotations

from typing import Protocol

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.config import Hypervisor as HypervisorKind
from xend_actors.config import XendConfig
from xend_actors.errors import NotFound, XendError
from xend_actors.hypervisor.base import Driver, GuestMessage, HvDomain, Notification
from xend_actors.hypervisor.ring.messages import Message
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


class DomainWatcher(Protocol):
    """Who is told of the driver's notifications (the DomainTable); a tell, never an ask."""

    def domain_changed(self, domid: int) -> object: ...

    def guest_message(self, domid: int, message: Message) -> object: ...


class Hypervisor(TracedActor):
    def __init__(self, driver: Driver) -> None:
        super().__init__()
        self._driver = driver

    def on_stop(self) -> None:
        self._driver.close()

    def watch(self, watcher: DomainWatcher) -> None:
        """Tell ``watcher`` each domain change the driver reports (Xen's VIRQ_DOM_EXC) and
        each control message a guest sends."""
        def notify(notification: Notification) -> None:
            if isinstance(notification, GuestMessage):
                watcher.guest_message(notification.domid, notification.message)
            else:
                watcher.domain_changed(notification.domid)

        self._driver.watch(notify)

    def physinfo(self) -> PhysInfo:
        return self._driver.physinfo()

    def list_domains(self) -> list[HvDomain]:
        return self._driver.list_domains()

    def domain(self, domid: int) -> HvDomain | None:
        """Domain ``domid`` now; None if the hypervisor has none (a usual answer, not an
        error: the domain may have just gone)."""
        try:
            return self._driver.domain(domid)
        except NotFound:
            return None

    def create(self, name: str, memory_mb: int, *, cpu: int = -1) -> int:
        """A new empty, paused domain; its id."""
        return self._driver.create(name, memory_mb, cpu=cpu)

    def destroy(self, domid: int) -> None:
        """Destroy a domain no Domain actor has (half built by a xend that died)."""
        self._driver.destroy(domid)

    def dmesg(self, clear: bool = False) -> str:
        return self._driver.dmesg(clear)

    def set_bvt_ctx_allow(self, ctx_allow: int) -> None:
        self._driver.set_bvt_ctx_allow(ctx_allow)

    def set_rrobin_slice(self, slice_ns: int) -> None:
        self._driver.set_rrobin_slice(slice_ns)


class HypervisorProxy(ActorMemberMixin, pykka.ActorProxy[Hypervisor]):
    watch = proxy_method(Hypervisor.watch)
    physinfo = proxy_method(Hypervisor.physinfo)
    list_domains = proxy_method(Hypervisor.list_domains)
    domain = proxy_method(Hypervisor.domain)
    create = proxy_method(Hypervisor.create)
    destroy = proxy_method(Hypervisor.destroy)
    dmesg = proxy_method(Hypervisor.dmesg)
    set_bvt_ctx_allow = proxy_method(Hypervisor.set_bvt_ctx_allow)
    set_rrobin_slice = proxy_method(Hypervisor.set_rrobin_slice)
