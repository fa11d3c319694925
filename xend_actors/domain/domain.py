"""The Domain actor: one domain's life as xend runs it (the original XendDomainInfo).

It builds the domain, pauses and unpauses it, asks it to shut down, sets its memory
and scheduling, and rebuilds it on restart. It owns the domain's ``DomainRecord``
and its store file ``domain/<id>``, written atomically before any reply; every new
record is told to the DomainTable. It never asks the table anything (the table
asks it), so the two can never wait on each other.

Its console (``console/hub.py``) opens when it is built, is re-attached when it is
rebuilt on restart, and closes when the domain is gone for good.

Its devices belong to two child actors made when the domain first has a device of
their kind: a BlkifController for vbds and a NetifController for vifs (``device/``).
They are attached in config order when the domain is built, hot-plugged by
``device_create``/``device_destroy``, and released before the domain is destroyed. The
frontends' messages reach them through here; the record keeps each device's info.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pykka

from xend_actors import sxp
from xend_actors.config import XendConfig
from xend_actors.device.blkif import BlkifController
from xend_actors.device.config import Device, PciConfig, VbdConfig, VifConfig, device_sxpr
from xend_actors.device.info import DeviceInfo, VbdInfo, VifInfo
from xend_actors.device.netif import NetifController
from xend_actors.domain.config import DomainConfig, with_device, without_device
from xend_actors.domain.record import DomainRecord, RestartState, store_sxpr
from xend_actors.errors import BadRequest, Conflict, NotFound, Timeout, XendError
from xend_actors.hypervisor.base import Driver, SchedParams, ShutdownReason
from xend_actors.hypervisor.ring import messages
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

CONSOLE_TIMEOUT = 30.0  # opening a console waits for the hypervisor's console channel

DEVICE_TIMEOUT = 90.0  # a device's scripts may take a while (each has its own deadline)
DEVICE_KINDS: dict[str, type[Device]] = {"vbd": VbdConfig, "vif": VifConfig}
_backend_ports = itertools.count(16)  # dom0's end of each event channel, host-wide


@dataclass(frozen=True)
class DeviceServices:
    """What a domain's device controllers need from the rest of xend."""

    config: XendConfig
    claims: pykka.ActorProxy
    network: pykka.ActorProxy


SHUTDOWN_REASONS = {r.value: r for r in (ShutdownReason.POWEROFF, ShutdownReason.REBOOT,
                                         ShutdownReason.HALT, ShutdownReason.SUSPEND,
                                         ShutdownReason.SYSRQ)}


class Domain(TracedActor):
    # Python 3.11 walks every live non-daemon thread on each thread start, which made
    # creates slower as domains grew; Domain threads hold nothing a stop must wait for.
    use_daemon_thread = True

    def __init__(self, record: DomainRecord, *, driver: Driver, events: pykka.ActorProxy,
                 consoles: pykka.ActorProxy, table: pykka.ActorProxy, records: RecordDir,
                 devices: DeviceServices, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.record = record
        self._driver = driver
        self._events = events
        self._consoles = consoles
        self._table = table
        self._records = records
        self._devices = devices
        self._clock = clock
        self._blkif: pykka.ActorProxy | None = None
        self._netif: pykka.ActorProxy | None = None
        self._frontends_up: set[int] = set()  # message types whose frontend said UP
        self._frontend_ports = itertools.count(2)  # port 1 is the control channel

    def on_stop(self) -> None:
        self._stop_controllers()

    @property
    def domid(self) -> int:
        return self.record.domid

    def _ids(self) -> list[str]:
        return [self.record.name, str(self.domid)]

    def _update(self, **changes: object) -> DomainRecord:
        """Replace the record, persist it, then tell the table."""
        self.record = replace(self.record, **changes)  # type: ignore[arg-type]
        self.save()
        self._table.record_changed(self.record)
        return self.record

    def save(self) -> None:
        self._records.write(str(self.domid), store_sxpr(self.record, None, self._clock()))

    # --- building -------------------------------------------------------------------

    def build(self) -> DomainRecord:
        """Load the image into the empty paused domain; on failure destroy it, leave nothing."""
        try:
            console_port = self._build(self._config())
        except Exception as error:
            self._abandon()
            message = error.message if isinstance(error, XendError) else str(error)
            raise XendError(f"Error creating domain: {message}",
                            status=getattr(error, "status", 500)) from None
        record = self._update(start_time=self._clock(), console_port=console_port)
        self._events.publish("xend.domain.create", self._ids())
        return record

    def _build(self, config: DomainConfig) -> int:
        """Load the image, attach the devices and open (or re-attach) the console; returns
        the console's port."""
        self._driver.build(self.domid, config.image.image())
        self._attach_devices(config)
        if config.maxmem_mb is not None:
            self._driver.set_maxmem(self.domid, config.maxmem_mb)
        return self._open_console(config)

    def _open_console(self, config: DomainConfig) -> int:
        port = self.record.console_port or config.console_port
        try:
            info = self._consoles.open(self.domid, port).get(timeout=CONSOLE_TIMEOUT)
        except pykka.Timeout:
            raise Timeout(f"the consoles did not answer within {CONSOLE_TIMEOUT:g} s") from None
        return info.port

    def _close_console(self) -> None:
        try:
            self._consoles.close(self.domid).get(timeout=CONSOLE_TIMEOUT)
        except (XendError, pykka.Timeout, pykka.ActorDeadError) as error:
            log.warning("Closing the console of domain %s failed: %s", self.domid, error)

    def _config(self) -> DomainConfig:
        if self.record.config is None:
            raise Conflict(f"domain {self.domid} has no configuration")
        return self.record.config

    def _abandon(self) -> None:
        """Undo a failed build: destroy the domain, forget it, stop."""
        with contextlib.suppress(XendError):
            self._driver.destroying(self.domid)
        self._release_devices()
        try:
            self._driver.destroy(self.domid)
        except XendError as error:
            log.warning("Destroying half-built domain %s failed: %s", self.domid, error)
        self._close_console()
        self._records.delete(str(self.domid))
        self._table.forget(self.domid)
        self.stop()  # pykka's: stops after this message, without waiting

    def configure(self, config: DomainConfig) -> DomainRecord:
        """Give an adopted bare domain its configuration (restore and migration)."""
        if self.record.config is not None:
            raise Conflict(f"Domain already configured: {self.domid}")
        self.record = replace(self.record, config=config, name=config.name)
        try:
            self._attach_devices(config)
            console_port = self._open_console(config)
        except XendError:
            self._release_devices()
            self.record = replace(self.record, config=None)
            raise
        return self._update(start_time=self._clock(), console_port=console_port)

    def recover(self) -> None:
        """xend restarted and found the domain alive: its devices known again, its console
        back on the same port."""
        if self.record.config is None:
            return
        vbds = [d for d in self.record.devices if isinstance(d, VbdInfo)]
        vifs = [d for d in self.record.devices if isinstance(d, VifInfo)]
        try:
            if vbds:
                self._ask(self._controller(VbdConfig).adopt(vbds))
            if vifs:
                self._ask(self._controller(VifConfig).adopt(vifs))
        except XendError as error:
            log.error("Domain %s recovered without its devices: %s", self.record.name, error)
        try:
            console_port = self._open_console(self.record.config)
        except XendError as error:
            log.error("Domain %s recovered without its console: %s", self.record.name, error)
            return
        if console_port != self.record.console_port:
            self._update(console_port=console_port)

    # --- running --------------------------------------------------------------------

    def pause(self) -> None:
        self._driver.pause(self.domid)
        self._events.publish("xend.domain.pause", self._ids())

    def unpause(self) -> None:
        self._driver.unpause(self.domid)
        self._events.publish("xend.domain.unpause", self._ids())

    def shutdown(self, word: str, key: str = "") -> DomainRecord:
        """Ask the guest to shut down; ``halt`` cancels any restart, ``reboot`` forces one."""
        reason = SHUTDOWN_REASONS.get(word)
        if reason is None:
            raise BadRequest(f"invalid reason:{word}")
        if reason is ShutdownReason.SYSRQ and len(key) != 1:
            raise BadRequest("sysrq needs a key: one character")
        record = self._request(reason)
        self._events.publish("xend.domain.shutdown", [*self._ids(), reason.value])
        self._driver.shutdown(self.domid, reason, key)
        return record

    def note_destroy(self, reason: ShutdownReason) -> DomainRecord:
        """Record why xend destroys the domain: ``halt`` cancels a restart, ``reboot`` forces."""
        return self._request(reason)

    def _request(self, reason: ShutdownReason) -> DomainRecord:
        pending = self.record.restart_state is RestartState.PENDING
        if reason is ShutdownReason.HALT and pending:
            self._events.publish("xend.domain.restart", [*self._ids(), "cancel"])
            return self._update(shutdown_request=reason, restart_state=None)
        if reason is ShutdownReason.REBOOT and not pending:
            self._events.publish("xend.domain.restart", [*self._ids(), "schedule"])
            return self._update(shutdown_request=reason, restart_state=RestartState.PENDING)
        return self._update(shutdown_request=reason)

    def exited(self, reason: ShutdownReason, restart: bool) -> DomainRecord:
        """The reaper found the domain dead for ``reason``; ``restart`` says what follows."""
        self._events.publish("xend.domain.exit", [*self._ids(), reason.value])
        if restart and self.record.restart_state is not RestartState.PENDING:
            self._events.publish("xend.domain.restart", [*self._ids(), "schedule"])
            return self._update(restart_state=RestartState.PENDING)
        return self.record

    def suspended(self) -> None:
        self._events.publish("xend.domain.suspended", self._ids())

    def release(self) -> None:
        """Let go of what the domain holds before the hypervisor destroys it: its devices,
        and the console unless a restart will re-attach it."""
        self._release_devices()
        if self.record.devices:
            self._update(devices=())
        if self.record.restart_state is not RestartState.PENDING:
            self._close_console()

    def forget(self) -> None:
        """The domain is gone for good: close its console, drop its store record and stop."""
        self._close_console()
        self._records.delete(str(self.domid))
        self.stop()  # pykka's: stops after this message, without waiting

    # --- restart ---------------------------------------------------------------------

    def restart(self) -> None:
        """Rebuild the domain with the same name, id and start time, then unpause it."""
        config = self._config()
        self._update(restart_state=RestartState.BOOTING, restart_time=self._clock())
        self._events.publish("xend.domain.restart", [*self._ids(), "begin"])
        log.info("Restarting domain: id=%s name=%s", self.domid, self.record.name)
        try:
            self._driver.create(config.name, config.memory_mb, cpu=config.cpu, domid=self.domid)
            self._build(config)
            self._driver.unpause(self.domid)
        except XendError as error:
            log.error("Restart of domain %s failed: %s", self.record.name, error)
            self._events.publish("xend.domain.restart", [*self._ids(), "fail"])
            self._abandon()
            return
        self._update(restart_state=None, shutdown_request=None)
        self._events.publish("xend.domain.restart", [*self._ids(), "success"])

    # --- devices ---------------------------------------------------------------------------

    def device_create(self, device: Device) -> DeviceInfo:
        """Hot-plug ``device`` and add it to the config; nothing changes if it fails."""
        config = self._config()
        kind = _kind_of(device)
        taken = [d.idx for d in self.record.devices if isinstance(d, _INFO[kind])]
        info = self._attach(max(taken, default=-1) + 1, device)
        self._update(config=with_device(config, device), devices=(*self.record.devices, info))
        self._events.publish("xend.domain.device.create", [*self._ids(), sxp_kind(kind)])
        return info

    def device_configure(self, kind_name: str, idx: int, device: Device) -> DeviceInfo:
        """Change vif ``idx``'s bridge, script or addresses; a vbd cannot be changed."""
        kind = _kind_named(kind_name)
        if kind is not VifConfig or not isinstance(device, VifConfig):
            raise BadRequest(f"{kind_name} {idx}: only a vif's bridge, script and ip can be "
                             "changed; destroy the device and create it anew")
        old = self._device_info(VifConfig, idx)
        info = self._ask(self._controller(VifConfig).configure(idx, device))
        config = without_device(self._config(), VifConfig, self._position(old), device)
        self._update(config=config, devices=tuple(info if d is old else d
                                                  for d in self.record.devices))
        return info

    def device_destroy(self, kind_name: str, idx: int) -> None:
        """Unplug device ``idx`` of the kind and drop it from the config."""
        kind = _kind_named(kind_name)
        info = self._device_info(kind, idx)
        position = self._position(info)
        self._ask(self._controller(kind).detach(idx))
        self._update(config=without_device(self._config(), kind, position),
                     devices=tuple(d for d in self.record.devices if d is not info))
        self._events.publish("xend.domain.device.destroy", [*self._ids(), kind_name])

    def device_changed(self, info: DeviceInfo) -> None:
        """A controller's news about a device (a frontend connected)."""
        kind = type(info)
        self._update(devices=tuple(info if type(d) is kind and d.idx == info.idx else d
                                   for d in self.record.devices))

    def guest_message(self, message: messages.Message) -> None:
        """A control message from the domain's frontends: to the controller of its kind."""
        if isinstance(message, messages.BlkifFeDriverStatus | messages.NetifFeDriverStatus):
            self._frontends_up.add(message.type)
        if message.type == messages.MessageType.BLKIF_FE and self._blkif is not None:
            self._blkif.frontend(message)
        elif message.type == messages.MessageType.NETIF_FE and self._netif is not None:
            self._netif.frontend(message)

    def _attach_devices(self, config: DomainConfig) -> None:
        """Attach every vbd and vif of ``config`` in order; on failure release them all."""
        counts = {VbdConfig: 0, VifConfig: 0}
        attached: list[DeviceInfo] = []
        try:
            for device in config.devices:
                if isinstance(device, PciConfig):
                    raise XendError("pci devices cannot be passed through by this hypervisor "
                                    f"driver ({device_text(device)})", status=501)
                kind = _kind_of(device)
                attached.append(self._attach(counts[kind], device))
                counts[kind] += 1
        except XendError:
            self._release_devices()
            raise
        self.record = replace(self.record, devices=tuple(attached))

    def _attach(self, idx: int, device: Device) -> DeviceInfo:
        if device.backend != 0:
            raise BadRequest(f"{sxp_kind(_kind_of(device))}: backend domain {device.backend} "
                             "is not supported: domain 0 runs every backend here")
        return self._ask(self._controller(_kind_of(device)).attach(idx, device))

    def _controller(self, kind: type[Device]) -> pykka.ActorProxy:
        """The controller of ``kind``, made on first use."""
        if kind is VbdConfig:
            if self._blkif is None:
                self._blkif = BlkifController.start(
                    self.domid, driver=self._driver, config=self._devices.config,
                    claims=self._devices.claims, ports=self._ports,
                    frontend_up=messages.MessageType.BLKIF_FE in self._frontends_up).proxy()
            return self._blkif
        if self._netif is None:
            self._netif = NetifController.start(
                self.domid, self.record.name, driver=self._driver, config=self._devices.config,
                network=self._devices.network, owner=self.actor_ref.proxy(), ports=self._ports,
                frontend_up=messages.MessageType.NETIF_FE in self._frontends_up).proxy()
        return self._netif

    def _ports(self) -> tuple[int, int]:
        """A new event-channel pair: (dom0's port, the domain's port)."""
        return next(_backend_ports), next(self._frontend_ports)

    def _release_devices(self) -> None:
        for controller in (self._blkif, self._netif):
            if controller is not None:
                try:
                    self._ask(controller.release())
                except XendError as error:
                    log.warning("Releasing the devices of domain %s: %s", self.domid, error)
        self._stop_controllers()
        self._frontends_up.clear()
        self._frontend_ports = itertools.count(2)

    def _stop_controllers(self) -> None:
        for controller in (self._blkif, self._netif):
            if controller is not None:
                controller.actor_ref.stop(block=False)
        self._blkif = self._netif = None

    def _device_info(self, kind: type[Device], idx: int) -> DeviceInfo:
        for info in self.record.devices:
            if isinstance(info, _INFO[kind]) and info.idx == idx:
                return info
        raise NotFound(f"domain {self.record.name} has no {sxp_kind(kind)} {idx}")

    def _position(self, info: DeviceInfo) -> int:
        """Where ``info``'s device is among the config's devices of its kind: its rank,
        since devices are attached, and their idx given, in config order."""
        return sorted(d.idx for d in self.record.devices if type(d) is type(info)).index(info.idx)

    @staticmethod
    def _ask(future: pykka.Future):  # type: ignore[no-untyped-def]
        try:
            return future.get(timeout=DEVICE_TIMEOUT)
        except pykka.Timeout:
            raise Timeout(f"a device controller did not answer in {DEVICE_TIMEOUT:g} s") from None

    # --- memory and scheduling ------------------------------------------------------------

    def set_maxmem(self, memory_mb: int) -> None:
        self._driver.set_maxmem(self.domid, _positive("memory", memory_mb))

    def set_memory_target(self, target_mb: int) -> None:
        self._driver.set_memory_target(self.domid, _positive("target", target_mb))

    def pincpu(self, cpu: int) -> None:
        self._driver.pincpu(self.domid, cpu)

    def set_sched(self, params: SchedParams) -> None:
        self._driver.set_sched(self.domid, params)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise BadRequest(f"invalid {name}: {value} (must be at least 1)")
    return value


_INFO: dict[type[Device], type[DeviceInfo]] = {VbdConfig: VbdInfo, VifConfig: VifInfo}


def sxp_kind(kind: type[Device]) -> str:
    return "vbd" if kind is VbdConfig else "vif"


def device_text(device: Device) -> str:
    return sxp.show(device_sxpr(device))


def _kind_of(device: Device) -> type[Device]:
    if isinstance(device, VbdConfig | VifConfig):
        return type(device)
    raise BadRequest(f"cannot hot-plug {device_text(device)}: only vbd and vif devices")


def _kind_named(name: str) -> type[Device]:
    kind = DEVICE_KINDS.get(name)
    if kind is None:
        raise BadRequest(f"invalid device type: {name} (expected vbd or vif)")
    return kind
