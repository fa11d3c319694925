"""The BlkifController actor: one domain's virtual block devices (facts §5.3, §9.5).

It runs Xen's sequences with control messages to the block backend in domain 0 and
to the domain's block frontend:

* attach: bind the uname to a host node (``device/vbd.py``), claim it (the sharing
  check), attach it to the backend (``attach_backing``, Xen's ``losetup``), create
  the interface on first use (``BlkifBeCreate``), then ``BlkifBeVbdCreate`` and
  ``BlkifBeVbdGrow`` with the whole device as one extent. Every response is checked;
  on any failure each step done is undone in reverse, so nothing stays half-attached.
  A frontend that is up is told: DISCONNECTED for a new interface (it connects),
  CHANGED for a new vbd on a connected one (it re-probes).
* the frontend's handshake: DRIVER_STATUS UP → interface status DISCONNECTED;
  INTERFACE_CONNECT → an event-channel pair, ``BlkifBeConnect``, then CONNECTED.
* detach: ``BlkifBeVbdDestroy``, then the backing, the claim and the script binding go.
  ``undo`` takes out of the backend a vbd whose hot-plug a stopped xend left unfinished.
* release (the domain is being destroyed): every vbd detached, then
  ``BlkifBeDisconnect`` and ``BlkifBeDestroy``; failures are logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import Deadline, Supervised, ask, within
from xend_actors.config import XendConfig
from xend_actors.device.claims import BlockClaimsProxy
from xend_actors.device.config import VbdConfig
from xend_actors.device.info import VbdInfo
from xend_actors.device.vbd import BoundNode, bind, unbind, vdevice
from xend_actors.errors import Conflict, NotFound, XendError
from xend_actors.hypervisor.base import Driver
from xend_actors.hypervisor.ring import messages as m
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

HANDLE = 0  # one block interface per domain, as xend 2.0 made
WHOLE_DEVICE = 1 << 63  # an extent's length meaning "all of it" (facts §5.3)
CLAIM_TIMEOUT = 10.0
BACKEND_DOMID = 0


class BlkifController(Supervised, TracedActor):
    use_daemon_thread = True

    def __init__(self, domid: int, *, driver: Driver, config: XendConfig,
                 claims: BlockClaimsProxy, ports: Callable[[], tuple[int, int]],
                 frontend_up: bool = False) -> None:
        super().__init__()
        self._domid = domid
        self._driver = driver
        self._config = config
        self._claims = claims
        self._ports = ports
        self._frontend_up = frontend_up
        self._interface = False  # created in the backend
        self._connected = False
        self._vbds: dict[int, VbdInfo] = {}

    def describe(self) -> str:
        return f"the vbd controller of domain {self._domid}"

    # --- attaching and detaching ------------------------------------------------------------

    def attach(self, idx: int, vbd: VbdConfig, deadline: Deadline | None = None) -> VbdInfo:
        """Attach ``vbd`` as device ``idx``, each wait ending before ``deadline``;
        XendError (nothing left behind) if it fails."""
        if idx in self._vbds:
            raise Conflict(f"domain {self._domid} already has vbd {idx}")
        what = f"vbd {vbd.dev} ({vbd.uname})"
        vdev = vdevice(vbd.dev)
        if any(v.vdev == vdev for v in self._vbds.values()):
            raise Conflict(f"{what}: domain {self._domid} already has a vbd {vbd.dev}")
        undo: list[Callable[[], object]] = []
        try:
            bound = bind(self._config, vbd.uname, deadline)
            undo.append(lambda: unbind(self._config, bound, vbd.uname))
            ask(self._claims.claim(bound.node, self._domid, vbd.writable, not vbd.shared_ok),
                "the block claims", within(deadline, CLAIM_TIMEOUT))
            undo.append(lambda: self._claims.release(bound.node, self._domid, vbd.writable))
            device = self._driver.attach_backing(bound.node, readonly=not vbd.writable,
                                                 shared=vbd.shared_ok)
            undo.append(lambda: self._driver.detach_backing(device))
            new_interface = not self._interface
            if new_interface:
                self._send(m.BlkifBeCreate(self._domid, HANDLE), what)
                self._interface = True
                undo.append(self._destroy_interface)
            self._send(m.BlkifBeVbdCreate(self._domid, HANDLE, vdev, int(not vbd.writable)),
                       what)
            undo.append(lambda: self._send(m.BlkifBeVbdDestroy(self._domid, HANDLE, vdev), what))
            self._send(m.BlkifBeVbdGrow(self._domid, HANDLE, vdev,
                                        m.Extent(0, WHOLE_DEVICE, device)), what)
        except Exception as error:
            _undo(undo, what)
            if isinstance(error, XendError):
                if error.message.startswith(what):
                    raise
                raise type(error)(f"{what}: {error.message}", status=error.status) from None
            raise XendError(f"{what}: {error}") from error
        info = VbdInfo(idx, vdev, device, vbd.mode, vbd.dev, vbd.uname, bound.node, bound.script)
        self._vbds[idx] = info
        self._tell_frontend(new_interface)
        return info

    def detach(self, idx: int) -> None:
        info = self._vbds.get(idx)
        if info is None:
            raise NotFound(f"domain {self._domid} has no vbd {idx}")
        self._send(m.BlkifBeVbdDestroy(self._domid, HANDLE, info.vdev), _name(info))
        del self._vbds[idx]
        self._let_go(info)
        if self._connected and self._frontend_up:
            self._to_frontend(m.InterfaceStatus.CHANGED)

    def undo(self, vbd: VbdConfig) -> None:
        """A hot-plug of ``vbd`` that a stopped xend left unfinished: out of the backend if
        it got there, with the interface if no other vbd has it (the claims and backings
        were the stopped xend's). Raises if the backend keeps it (a paused guest)."""
        steps: list[m.Message] = [m.BlkifBeVbdDestroy(self._domid, HANDLE, vdevice(vbd.dev))]
        if not self._vbds:
            steps.append(m.BlkifBeDestroy(self._domid, HANDLE))
        for message in steps:
            try:
                self._send(message, f"vbd {vbd.dev} ({vbd.uname})")
            except XendError as error:
                if error.status != 404:  # 404: it never got there
                    raise
        self._interface = self._connected = bool(self._vbds)

    def adopt(self, infos: list[VbdInfo]) -> None:
        """xend restarted: the backend still has these vbds, connected; claim them again."""
        for info in infos:
            self._claims.claim(info.node, self._domid, info.writable, False)
            self._vbds[info.idx] = info
        self._interface = self._connected = self._frontend_up = bool(infos)

    def release(self) -> None:
        """The domain is going: take every vbd and the interface down; never raises."""
        for idx in list(self._vbds):
            info = self._vbds.pop(idx)
            try:
                self._send(m.BlkifBeVbdDestroy(self._domid, HANDLE, info.vdev), _name(info))
            except XendError as error:
                log.warning("%s", error.message)
            self._let_go(info)
        if self._interface:
            try:
                self._send(m.BlkifBeDisconnect(self._domid, HANDLE), "block interface")
                self._destroy_interface()
            except XendError as error:
                log.warning("Domain %s: %s", self._domid, error.message)
        self._interface = self._connected = False

    def infos(self) -> list[VbdInfo]:
        return [self._vbds[idx] for idx in sorted(self._vbds)]

    # --- the frontend's side ----------------------------------------------------------------

    def frontend(self, message: m.Message) -> None:
        """A message from the domain's block frontend."""
        if isinstance(message, m.BlkifFeDriverStatus):
            self._frontend_up = message.status is m.DriverStatus.UP
            self._connected = False
            if self._frontend_up and self._interface:
                self._to_frontend(m.InterfaceStatus.DISCONNECTED)
        elif isinstance(message, m.BlkifFeInterfaceConnect):
            self._connect(message)

    def _connect(self, message: m.BlkifFeInterfaceConnect) -> None:
        if message.handle != HANDLE or not self._interface:
            log.warning("Domain %s asked to connect unknown block interface %s",
                        self._domid, message.handle)
            return
        backend_port, frontend_port = self._ports()
        try:
            self._send(m.BlkifBeConnect(self._domid, HANDLE, message.shmem_frame, backend_port),
                       "block interface")
        except XendError as error:
            log.error("Domain %s: %s", self._domid, error.message)
            return
        self._connected = True
        self._to_frontend(m.InterfaceStatus.CONNECTED, frontend_port)

    def _tell_frontend(self, new_interface: bool) -> None:
        if not self._frontend_up:
            return  # it asks when it comes up
        if new_interface:
            self._to_frontend(m.InterfaceStatus.DISCONNECTED)
        elif self._connected:
            self._to_frontend(m.InterfaceStatus.CHANGED)

    def _to_frontend(self, status: m.InterfaceStatus, evtchn: int = 0) -> None:
        try:
            self._driver.send_control(self._domid, m.BlkifFeInterfaceStatus(
                HANDLE, status, evtchn, BACKEND_DOMID))
        except XendError as error:
            log.warning("Domain %s: telling the block frontend %s failed: %s",
                        self._domid, status.name, error.message)

    # --- inside -----------------------------------------------------------------------------

    def _send(self, message: m.Message, what: str) -> None:
        m.check(self._driver.send_control(BACKEND_DOMID, message), what)

    def _destroy_interface(self) -> None:
        self._send(m.BlkifBeDestroy(self._domid, HANDLE), "block interface")
        self._interface = False

    def _let_go(self, info: VbdInfo) -> None:
        """The backing, the claim and the script binding of a vbd the backend let go."""
        for step in (lambda: self._driver.detach_backing(info.device),
                     lambda: self._claims.release(info.node, self._domid, info.writable)):
            try:
                step()
            except XendError as error:
                log.warning("Domain %s: %s: %s", self._domid, _name(info), error.message)
        unbind(self._config, BoundNode(info.node, info.script), info.uname)


class BlkifProxy(ActorMemberMixin, pykka.ActorProxy[BlkifController]):
    attach = proxy_method(BlkifController.attach)
    detach = proxy_method(BlkifController.detach)
    undo = proxy_method(BlkifController.undo)
    adopt = proxy_method(BlkifController.adopt)
    release = proxy_method(BlkifController.release)
    infos = proxy_method(BlkifController.infos)
    frontend = proxy_method(BlkifController.frontend)


def _name(info: VbdInfo) -> str:
    return f"vbd {info.dev} ({info.uname})"


def _undo(steps: list[Callable[[], object]], what: str) -> None:
    for step in reversed(steps):
        try:
            step()
        except Exception as error:  # keep undoing the rest
            log.warning("Rolling back %s: %s", what, error)
