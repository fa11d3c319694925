"""A domain's devices as its Domain actor holds them: the two controllers and the rules
for attaching, changing and removing vbds and vifs.

``DomainDevices`` is a plain object owned by one Domain actor and used on its thread
only. The controllers are child actors made when the domain first has a device of their
kind: a BlkifController for vbds and a NetifController for vifs (``device/``). Devices
are attached in config order when the domain is built, so a device's ``idx`` is its rank
among the config's devices of its kind; the frontends' control messages reach the
controller of their kind through here.

It supervises the controllers (``actors.Supervised``): one that failed is noticed at
the domain's next use of it, and a new one takes over the devices of its kind the
domain's record holds (``adopt``, as after a xend restart).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pykka

from xend_actors import sxp
from xend_actors.actors import ASK_TIMEOUT, Deadline, ask, proxy_of, within
from xend_actors.config import XendConfig
from xend_actors.device.blkif import BlkifController, BlkifProxy
from xend_actors.device.claims import BlockClaimsProxy
from xend_actors.device.config import Device, PciConfig, VbdConfig, VifConfig, device_sxpr
from xend_actors.device.info import DeviceInfo, VbdInfo, VifInfo
from xend_actors.device.netif import DeviceOwner, NetifController, NetifProxy
from xend_actors.device.network import NetworkProxy
from xend_actors.errors import BadRequest, NotFound, XendError
from xend_actors.hypervisor.base import Driver
from xend_actors.hypervisor.ring import messages

log = logging.getLogger(__name__)

DEVICE_TIMEOUT = 3 * ASK_TIMEOUT  # outside a request: a device's scripts take a while
DEVICE_KINDS: dict[str, type[Device]] = {"vbd": VbdConfig, "vif": VifConfig}
_INFO: dict[type[Device], type[DeviceInfo]] = {VbdConfig: VbdInfo, VifConfig: VifInfo}
_backend_ports = itertools.count(16)  # dom0's end of each event channel, host-wide

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceServices:
    """What a domain's device controllers need from the rest of xend."""

    config: XendConfig
    claims: BlockClaimsProxy
    network: NetworkProxy


class DomainDevices:
    def __init__(self, domid: int, name: Callable[[], str], *, driver: Driver,
                 services: DeviceServices, owner: Callable[[], DeviceOwner],
                 devices: Callable[[], Sequence[DeviceInfo]] = tuple) -> None:
        self._domid = domid
        self._name = name  # the domain's name now (a configure may change it)
        self._devices = devices  # the devices the domain's record holds now
        self._driver = driver
        self._services = services
        self._owner = owner  # the Domain actor's proxy, asked for when a netif is made
        self._blkif: BlkifProxy | None = None
        self._netif: NetifProxy | None = None
        self._frontends_up: set[int] = set()  # message types whose frontend said UP
        self._frontend_ports = itertools.count(2)  # port 1 is the control channel

    def attach_all(self, devices: Sequence[Device],
                   deadline: Deadline | None = None) -> tuple[DeviceInfo, ...]:
        """Attach every vbd and vif in order; on failure release them all and raise."""
        counts = {VbdConfig: 0, VifConfig: 0}
        attached: list[DeviceInfo] = []
        try:
            for device in devices:
                if isinstance(device, PciConfig):
                    raise XendError("pci devices cannot be passed through by this hypervisor "
                                    f"driver ({device_text(device)})", status=501)
                kind = kind_of(device)
                attached.append(self.attach(counts[kind], device, deadline))
                counts[kind] += 1
        except XendError:
            self.release()  # cleaning up is not the request's: it has its own time
            raise
        return tuple(attached)

    def attach(self, idx: int, device: Device, deadline: Deadline | None = None) -> DeviceInfo:
        if isinstance(device, PciConfig):
            raise BadRequest(f"cannot hot-plug {device_text(device)}: only vbd and vif devices")
        if device.backend != 0:
            raise BadRequest(f"{sxp_kind(kind_of(device))}: backend domain {device.backend} "
                             "is not supported: domain 0 runs every backend here")
        if isinstance(device, VbdConfig):
            return self._ask(self._blkif_controller().attach(idx, device, _inner(deadline)),
                             deadline)
        return self._ask(self._netif_controller().attach(idx, device, _inner(deadline)),
                         deadline)

    def configure_vif(self, idx: int, vif: VifConfig,
                      deadline: Deadline | None = None) -> VifInfo:
        return self._ask(self._netif_controller().configure(idx, vif, _inner(deadline)),
                         deadline)

    def undo_vif_change(self, idx: int, vif: VifConfig,
                        deadline: Deadline | None = None) -> None:
        self._ask(self._netif_controller().undo_change(idx, vif, _inner(deadline)), deadline)

    def detach(self, kind: type[Device], idx: int, deadline: Deadline | None = None) -> None:
        if kind is VbdConfig:
            self._ask(self._blkif_controller().detach(idx), deadline)
        else:
            self._ask(self._netif_controller().detach(idx), deadline)

    def adopt(self, devices: Sequence[DeviceInfo]) -> None:
        """xend restarted and found the domain alive: its devices known again."""
        vbds = [d for d in devices if isinstance(d, VbdInfo)]
        vifs = [d for d in devices if isinstance(d, VifInfo)]
        if vbds:
            self._ask(self._blkif_controller().adopt(vbds))
        if vifs:
            self._ask(self._netif_controller().adopt(vifs))

    def undo(self, idx: int, device: Device) -> DeviceInfo | None:
        """Take out of the backend what a hot-plug of ``device`` as ``idx``, cut off by a
        xend stop, got to; the device's info if the backend keeps it (the domain's then)."""
        if isinstance(device, VbdConfig):
            self._ask(self._blkif_controller().undo(device))
            return None
        if isinstance(device, VifConfig):
            return self._ask(self._netif_controller().undo(idx, device))
        return None  # a pci device is refused before any backend is asked

    def release(self, deadline: Deadline | None = None) -> None:
        """Let go of every device (the domain is going, or its build failed); never raises:
        a controller that does not answer within the deadline is left to finish alone."""
        held: list[Callable[[], BlkifProxy | NetifProxy]] = []
        if self._blkif is not None:
            held.append(self._blkif_controller)  # a failed one's successor, if need be
        if self._netif is not None:
            held.append(self._netif_controller)
        for controller in held:
            try:
                self._ask(controller().release(), deadline)
            except (XendError, pykka.ActorDeadError) as error:
                log.warning("Releasing the devices of domain %s: %s", self._domid, error)
        self.stop()
        self._frontends_up.clear()
        self._frontend_ports = itertools.count(2)

    def stop(self) -> None:
        for controller in (self._blkif, self._netif):
            if controller is not None:
                controller.actor_ref.stop(block=False)
        self._blkif = self._netif = None

    def frontend(self, message: messages.Message) -> None:
        """A control message from the domain's frontends: to the controller of its kind."""
        if isinstance(message, messages.BlkifFeDriverStatus | messages.NetifFeDriverStatus):
            self._frontends_up.add(message.type)
        if message.type == messages.MessageType.BLKIF_FE and self._blkif is not None:
            self._blkif_controller().frontend(message)
        elif message.type == messages.MessageType.NETIF_FE and self._netif is not None:
            self._netif_controller().frontend(message)

    def _failed(self, controller: BlkifProxy | NetifProxy | None, kind: str) -> bool:
        """Whether ``controller`` is one that failed (and so stopped by itself)."""
        if controller is None or controller.actor_ref.is_alive():
            return False
        log.error("The %s controller of domain %s failed; a new one takes over its devices",
                  kind, self._domid)
        return True

    def _blkif_controller(self) -> BlkifProxy:
        if self._failed(self._blkif, "vbd"):
            self._blkif = None
            vbds = [d for d in self._devices() if isinstance(d, VbdInfo)]
            self._ask(self._blkif_controller().adopt(vbds))
        if self._blkif is None:
            self._blkif = proxy_of(BlkifController.start(
                self._domid, driver=self._driver, config=self._services.config,
                claims=self._services.claims, ports=self._ports,
                frontend_up=messages.MessageType.BLKIF_FE in self._frontends_up), BlkifProxy)
        return self._blkif

    def _netif_controller(self) -> NetifProxy:
        if self._failed(self._netif, "vif"):
            self._netif = None
            vifs = [d for d in self._devices() if isinstance(d, VifInfo)]
            self._ask(self._netif_controller().adopt(vifs))
        if self._netif is None:
            self._netif = proxy_of(NetifController.start(
                self._domid, self._name(), driver=self._driver, config=self._services.config,
                network=self._services.network, owner=self._owner(), ports=self._ports,
                frontend_up=messages.MessageType.NETIF_FE in self._frontends_up), NetifProxy)
        return self._netif

    def _ports(self) -> tuple[int, int]:
        """A new event-channel pair: (dom0's port, the domain's port)."""
        return next(_backend_ports), next(self._frontend_ports)

    @staticmethod
    def _ask(future: pykka.Future[T], deadline: Deadline | None = None) -> T:
        return ask(future, "a device controller", within(deadline, DEVICE_TIMEOUT))


def _inner(deadline: Deadline | None) -> Deadline | None:
    """What a controller is given of ``deadline``: the ask to it ends then too, so its
    own waits (``actors.within``) end a margin before."""
    return None if deadline is None else deadline.inner()


def find_device(devices: Sequence[DeviceInfo], kind: type[Device], idx: int,
                domain: str) -> DeviceInfo:
    for info in devices:
        if isinstance(info, _INFO[kind]) and info.idx == idx:
            return info
    raise NotFound(f"domain {domain} has no {sxp_kind(kind)} {idx}")


def next_idx(devices: Sequence[DeviceInfo], kind: type[Device]) -> int:
    return max((d.idx for d in devices if isinstance(d, _INFO[kind])), default=-1) + 1


def position(devices: Sequence[DeviceInfo], info: DeviceInfo) -> int:
    """Where ``info``'s device is among the config's devices of its kind: its rank,
    since devices are attached, and their idx given, in config order."""
    return sorted(d.idx for d in devices if type(d) is type(info)).index(info.idx)


def sxp_kind(kind: type[Device]) -> str:
    return "vbd" if kind is VbdConfig else "vif"


def device_text(device: Device) -> str:
    return sxp.show(device_sxpr(device))


def kind_of(device: Device) -> type[Device]:
    if isinstance(device, VbdConfig | VifConfig):
        return type(device)
    raise BadRequest(f"cannot hot-plug {device_text(device)}: only vbd and vif devices")


def kind_named(name: str) -> type[Device]:
    kind = DEVICE_KINDS.get(name)
    if kind is None:
        raise BadRequest(f"invalid device type: {name} (expected vbd or vif)")
    return kind
