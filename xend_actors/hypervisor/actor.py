"""The Hypervisor actor: the driver's host-wide calls and its notifications.

It owns the driver's lifetime (opened by ``open_driver``, closed when the actor stops)
and makes every driver call that is not about one domain's life: the host's info, the
list and snapshots of domains, making a new empty domain (an id is the host's to give)
and the host-wide scheduler knobs. The DomainTable asks it, and never calls the driver
itself; calls about one domain's life are made by that domain's Domain actor (the
driver is thread-safe), so one slow guest holds up neither this actor nor the table.
The driver's notifications are told to a ``DomainWatcher`` (the table), never asked.

It supervises the hypervisor's helper process (``xend-simhv``): a helper that dies
takes its domains with it, so every call fails at once (never hangs) and, within a
second, a new helper is started, the driver reconnected, and the watcher told
``hypervisor_lost`` then ``hypervisor_restarted``: its domains crashed, and their
restart rules apply. The new helper gives ids past the highest this actor has seen, as
Xen's ids only grow: a new domain never takes the id of a crashed one whose end xend is
still handling (its record, its console port, its restart with the same id).
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.config import Hypervisor as HypervisorKind
from xend_actors.config import XendConfig
from xend_actors.errors import NotFound, XendError
from xend_actors.hypervisor.base import (
    DomainCounters,
    Driver,
    GuestMessage,
    HvDomain,
    LinuxImage,
    Notification,
)
from xend_actors.hypervisor.ring.messages import Message
from xend_actors.node import PhysInfo
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

MONITOR_SECONDS = 1.0  # how often the helper's connection is looked at


def helper_starter(config: XendConfig) -> Callable[[int], None] | None:
    """What starts the configured hypervisor's helper process if none runs, giving ids
    from the one it is passed; None if it has none (qemu's processes are each one
    domain's)."""
    if config.hypervisor is HypervisorKind.SIM:
        def start(first_domid: int) -> None:
            _ensure_simhv(config, first_domid)
        return start
    return None


def _ensure_simhv(config: XendConfig,
                  first_domid: int = 1) -> subprocess.Popen[bytes] | None:
    """An xend-simhv answering on the run dir's socket: the one started now, or None if
    one ran already."""
    from xend_actors.hypervisor.sim.launch import ensure_simhv

    return ensure_simhv(
        config.run_dir / "simhv.sock", memory_mb=config.sim_memory_mb,
        cpus=config.sim_cpus, log_file=config.logfile.parent / "xend-simhv.log",
        pid_file=config.run_dir / "simhv.pid", taps=config.sim_taps, first_domid=first_domid)


def _nothing() -> None:
    pass


def open_driver(config: XendConfig) -> tuple[Driver, Callable[[], None]]:
    """The configured driver, its hypervisor started if it is not running; and what stops
    a hypervisor started here (for a xend whose start then fails; nothing else is)."""
    if config.hypervisor is HypervisorKind.SIM:
        from xend_actors.hypervisor.sim.driver import SimDriver
        from xend_actors.hypervisor.sim.launch import stop_launched

        launched = _ensure_simhv(config)
        socket_path = config.run_dir / "simhv.sock"
        if launched is None:
            return SimDriver(socket_path), _nothing
        try:
            return SimDriver(socket_path), lambda: stop_launched(launched)
        except BaseException:
            stop_launched(launched)
            raise
    if config.hypervisor is HypervisorKind.QEMU:
        from xend_actors.hypervisor.qemu.accel import AccelMode
        from xend_actors.hypervisor.qemu.driver import QemuDriver

        return QemuDriver(config.run_dir, accel=AccelMode(config.qemu_accel)), _nothing
    raise XendError(f"the {config.hypervisor.value} driver is not available yet")


class DomainWatcher(Protocol):
    """Who is told of the driver's notifications (the DomainTable); a tell, never an ask."""

    def domain_changed(self, domid: int) -> object: ...

    def guest_message(self, domid: int, message: Message) -> object: ...

    def hypervisor_lost(self) -> object: ...

    def hypervisor_restarted(self) -> object: ...


@runtime_checkable
class Reconnecting(Protocol):
    """A driver whose connection to its helper process can be lost and made anew."""

    @property
    def lost(self) -> bool: ...

    def reconnect(self) -> None: ...


@runtime_checkable
class NameIndex(Protocol):
    """A driver that tells whether a domain has a name without listing every domain."""

    def has_domain_named(self, name: str) -> bool: ...


class Hypervisor(TracedActor):
    def __init__(self, driver: Driver,
                 start_helper: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._driver = driver
        self._start_helper = start_helper
        self._highest_domid = 0  # of every domain seen: a new helper gives ids past it
        self._watcher: DomainWatcher | None = None
        self._stopping = threading.Event()

    def on_start(self) -> None:
        if self._start_helper is not None and isinstance(self._driver, Reconnecting):
            me = self.actor_ref.proxy()
            threading.Thread(target=self._monitor, args=(self._driver, me),
                             name="hypervisor-monitor", daemon=True).start()

    def on_stop(self) -> None:
        self._stopping.set()
        self._driver.close()

    def _monitor(self, driver: Reconnecting, me: HypervisorProxy) -> None:
        while not self._stopping.wait(MONITOR_SECONDS):
            if driver.lost:
                try:
                    me.revive().get()
                except pykka.ActorDeadError:
                    return
                except XendError as error:
                    log.error("Starting a new hypervisor helper failed: %s; trying again",
                              error)

    def revive(self) -> None:
        """The helper died, and its domains with it: start a new one and reconnect."""
        driver, start = self._driver, self._start_helper
        if not isinstance(driver, Reconnecting) or not driver.lost or start is None:
            return
        log.error("The hypervisor's helper process died, and its domains with it; "
                  "starting a new one")
        if self._watcher is not None:
            self._watcher.hypervisor_lost()
        start(self._highest_domid + 1)
        driver.reconnect()
        if self._watcher is not None:
            self.watch(self._watcher)
            self._watcher.hypervisor_restarted()

    def watch(self, watcher: DomainWatcher) -> None:
        """Tell ``watcher`` each domain change the driver reports (Xen's VIRQ_DOM_EXC) and
        each control message a guest sends."""
        self._watcher = watcher

        def notify(notification: Notification) -> None:
            if isinstance(notification, GuestMessage):
                watcher.guest_message(notification.domid, notification.message)
            else:
                watcher.domain_changed(notification.domid)

        self._driver.watch(notify)

    def physinfo(self) -> PhysInfo:
        return self._driver.physinfo()

    def list_domains(self) -> list[HvDomain]:
        domains = self._driver.list_domains()
        self._seen(*(d.domid for d in domains))
        return domains

    def counters(self) -> list[DomainCounters]:
        """Every domain and its devices' counters, in one batch (the sampler's)."""
        return self._driver.counters()

    def name_taken(self, name: str) -> bool:
        """Whether a domain of the hypervisor's is called ``name``."""
        if isinstance(self._driver, NameIndex):
            return self._driver.has_domain_named(name)
        return any(domain.name == name for domain in self._driver.list_domains())

    def domain(self, domid: int) -> HvDomain | None:
        """Domain ``domid`` now; None if the hypervisor has none (a usual answer, not an
        error: the domain may have just gone)."""
        try:
            found = self._driver.domain(domid)
        except NotFound:
            return None
        self._seen(domid)
        return found

    def create(self, name: str, memory_mb: int, *, cpu: int = -1,
               image: LinuxImage | None = None) -> int:
        """A new empty, paused domain; its id. ``image``: what its ``build`` will load,
        which the driver may start loading now (``Driver.create``)."""
        domid = self._driver.create(name, memory_mb, cpu=cpu, image=image)
        self._seen(domid)
        return domid

    def _seen(self, *domids: int) -> None:
        self._highest_domid = max(self._highest_domid, *domids)

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
    revive = proxy_method(Hypervisor.revive)
    physinfo = proxy_method(Hypervisor.physinfo)
    list_domains = proxy_method(Hypervisor.list_domains)
    counters = proxy_method(Hypervisor.counters)
    domain = proxy_method(Hypervisor.domain)
    name_taken = proxy_method(Hypervisor.name_taken)
    create = proxy_method(Hypervisor.create)
    destroy = proxy_method(Hypervisor.destroy)
    dmesg = proxy_method(Hypervisor.dmesg)
    set_bvt_ctx_allow = proxy_method(Hypervisor.set_bvt_ctx_allow)
    set_rrobin_slice = proxy_method(Hypervisor.set_rrobin_slice)
