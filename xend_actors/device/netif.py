"""The NetifController actor: one domain's virtual network interfaces (facts §5.3, §9.6-9.7).

It runs Xen's sequences with control messages to the network backend in domain 0 and
to the domain's network frontend:

* attach vif N: ``NetifBeCreate`` (the backend makes link ``vif<domid>.<N>``), the
  optional ``vifname`` rename, then the vif script ``up`` with the original's words
  (``vif= domain= mac= bridge= [ip=]``, plus ``antispoof=``) as an argument vector. On
  failure each step done is undone, so nothing stays half-attached. A frontend that
  is up is told the new interface (DISCONNECTED) and connects.
* the frontend's handshake: DRIVER_STATUS UP → every vif's status (DISCONNECTED) and
  then ``NetifFeDriverStatus(UP, max_handle)``; INTERFACE_CONNECT → an event-channel
  pair, ``NetifBeConnect``, then CONNECTED with the frontend's port. The pair shows in
  the vif's info; its owner is told.
* detach and release: the vif script ``down``, ``NetifBeDisconnect``, ``NetifBeDestroy``,
  and the frontend is told CLOSED. ``undo`` detaches a vif whose hot-plug a stopped xend
  left unfinished (the domain's record holds it as an intent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import Deadline, Supervised, ask, within
from xend_actors.config import XendConfig
from xend_actors.device.config import VifConfig
from xend_actors.device.info import DeviceInfo, VifInfo
from xend_actors.device.network import NetworkProxy
from xend_actors.device.scripts import SCRIPT_TIMEOUT, run_script
from xend_actors.errors import Conflict, NotFound, XendError
from xend_actors.hypervisor.base import Driver
from xend_actors.hypervisor.ring import messages as m
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

BACKEND_DOMID = 0
RENAME_TIMEOUT = 10.0


class DeviceOwner(Protocol):
    """Who is told a device's news (the Domain actor); a tell, never an ask."""

    def device_changed(self, info: DeviceInfo) -> object: ...


def link_name(domid: int, idx: int) -> str:
    """The backend link of vif ``idx`` of domain ``domid`` (facts §9.7)."""
    return f"vif{domid}.{idx}"


class NetifController(Supervised, TracedActor):
    use_daemon_thread = True

    def __init__(self, domid: int, name: str, *, driver: Driver, config: XendConfig,
                 network: NetworkProxy, owner: DeviceOwner,
                 ports: Callable[[], tuple[int, int]], frontend_up: bool = False) -> None:
        super().__init__()
        self._domid = domid
        self._name = name
        self._driver = driver
        self._config = config
        self._network = network
        self._owner = owner
        self._ports = ports
        self._frontend_up = frontend_up
        self._vifs: dict[int, VifInfo] = {}

    def describe(self) -> str:
        return f"the vif controller of domain {self._domid}"

    # --- attaching and detaching ------------------------------------------------------------

    def attach(self, idx: int, vif: VifConfig, deadline: Deadline | None = None) -> VifInfo:
        """Attach ``vif`` as vif ``idx``, each wait ending before ``deadline``; XendError
        (nothing left behind) if it fails."""
        if idx in self._vifs:
            raise Conflict(f"domain {self._domid} already has vif {idx}")
        link = link_name(self._domid, idx)
        what = f"vif {idx} ({link})"
        info = self._new_info(idx, vif)
        self._send(m.NetifBeCreate(self._domid, idx, vif.mac), what)
        try:
            if vif.vifname:
                ask(self._network.rename_link(link, vif.vifname), "the network",
                    within(deadline, RENAME_TIMEOUT))
            self._script("up", info, deadline)
        except Exception as error:
            self._take_down(info, script=False)
            if isinstance(error, XendError):
                raise
            raise XendError(f"{what}: {error}") from error
        self._vifs[idx] = info
        if self._frontend_up:
            self._to_frontend(info, m.InterfaceStatus.DISCONNECTED)
        return info

    def configure(self, idx: int, vif: VifConfig, deadline: Deadline | None = None) -> VifInfo:
        """Change the bridge, script or addresses of vif ``idx`` (not its mac): the old
        script takes it down, the new one brings it up."""
        old = self._info(idx)
        if vif.mac != old.mac:
            raise Conflict(f"vif {idx}: the mac cannot be changed ({old.mac})")
        new = self._changed(old, vif)
        self._script("down", old, deadline)
        try:
            self._script("up", new, deadline)
        except XendError:
            self._script("up", old)
            raise
        self._vifs[idx] = new
        return new

    def undo_change(self, idx: int, vif: VifConfig, deadline: Deadline | None = None) -> None:
        """A change of vif ``idx`` to ``vif`` that a stopped xend left unfinished: whatever
        the new script got to taken down, the vif brought up again as it was."""
        old = self._info(idx)
        new = self._changed(old, vif)
        self._run_logged(lambda: self._script("down", new, deadline))
        self._script("up", old, deadline)

    def _changed(self, old: VifInfo, vif: VifConfig) -> VifInfo:
        return replace(old, bridge=vif.bridge or self._config.vif_bridge,
                       script=vif.script or self._config.vif_script, ips=vif.ips)

    def detach(self, idx: int) -> None:
        """Take vif ``idx`` away. A backend that refuses (qemu's paused guest cannot let
        go of its nic) leaves it attached as it was, and the refusal is the answer: a vif
        forgotten here would leave its tap behind, and its number unusable."""
        info = self._info(idx)
        what = f"vif {idx}"
        self._run_logged(lambda: self._script("down", info))
        try:
            self._send(m.NetifBeDisconnect(self._domid, idx), what)
            self._send(m.NetifBeDestroy(self._domid, idx), what)
        except XendError as error:
            if error.status != 404:  # the backend has it still
                self._run_logged(lambda: self._script("up", info))
                raise
            log.warning("Domain %s: %s", self._domid, error.message)  # gone already
        del self._vifs[idx]
        if self._frontend_up:
            self._to_frontend(info, m.InterfaceStatus.CLOSED)

    def undo(self, idx: int, vif: VifConfig) -> VifInfo | None:
        """A hot-plug of ``vif`` as vif ``idx`` that a stopped xend left unfinished: take
        down what it got to (its script's work, the backend's link, qemu's tap). The vif's
        info if the backend keeps it (a paused guest cannot let go): the domain's then."""
        self._vifs[idx] = info = self._new_info(idx, vif)
        try:
            self.detach(idx)  # a link never made is a 404: gone already
        except XendError as error:
            log.warning("Domain %s keeps vif %s, which a stopped xend was plugging: %s",
                        self._domid, idx, error.message)
            return info
        return None

    def adopt(self, infos: list[VifInfo]) -> None:
        """xend restarted: the backend still has these vifs, connected."""
        self._vifs = {info.idx: info for info in infos}
        self._frontend_up = bool(infos)

    def release(self) -> None:
        """The domain is going: take every vif down; never raises."""
        for idx in list(self._vifs):
            self._take_down(self._vifs.pop(idx), script=True)

    def infos(self) -> list[VifInfo]:
        return [self._vifs[idx] for idx in sorted(self._vifs)]

    # --- the frontend's side ----------------------------------------------------------------

    def frontend(self, message: m.Message) -> None:
        """A message from the domain's network frontend."""
        if isinstance(message, m.NetifFeDriverStatus):
            self._frontend_up = message.status is m.DriverStatus.UP
            if not self._frontend_up:
                return
            for idx, info in sorted(self._vifs.items()):
                self._vifs[idx] = info = replace(info, evtchn=None)
                self._to_frontend(info, m.InterfaceStatus.DISCONNECTED)
            self._driver.send_control(self._domid, m.NetifFeDriverStatus(
                m.DriverStatus.UP, max_handle=len(self._vifs)))
        elif isinstance(message, m.NetifFeInterfaceConnect):
            self._connect(message)

    def _connect(self, message: m.NetifFeInterfaceConnect) -> None:
        info = self._vifs.get(message.handle)
        if info is None:
            log.warning("Domain %s asked to connect unknown vif %s", self._domid, message.handle)
            return
        backend_port, frontend_port = self._ports()
        try:
            self._send(m.NetifBeConnect(self._domid, info.idx, message.tx_shmem_frame,
                                        message.rx_shmem_frame, backend_port),
                       f"vif {info.idx}")
        except XendError as error:
            log.error("Domain %s: %s", self._domid, error.message)
            return
        self._vifs[info.idx] = info = replace(info, evtchn=(backend_port, frontend_port))
        self._to_frontend(info, m.InterfaceStatus.CONNECTED, frontend_port)
        self._owner.device_changed(info)

    def _to_frontend(self, info: VifInfo, status: m.InterfaceStatus, evtchn: int = 0) -> None:
        try:
            self._driver.send_control(self._domid, m.NetifFeInterfaceStatus(
                info.idx, status, evtchn, info.mac, BACKEND_DOMID))
        except XendError as error:
            log.warning("Domain %s: telling the network frontend %s failed: %s",
                        self._domid, status.name, error.message)

    # --- inside -----------------------------------------------------------------------------

    def _new_info(self, idx: int, vif: VifConfig) -> VifInfo:
        link = link_name(self._domid, idx)
        return VifInfo(idx, vif.mac, vif.vifname or link, vif.bridge or self._config.vif_bridge,
                       vif.script or self._config.vif_script, vif.ips, vif.vifname)

    def _info(self, idx: int) -> VifInfo:
        info = self._vifs.get(idx)
        if info is None:
            raise NotFound(f"domain {self._domid} has no vif {idx}")
        return info

    def _send(self, message: m.Message, what: str) -> None:
        m.check(self._driver.send_control(BACKEND_DOMID, message), what)

    def _script(self, op: str, info: VifInfo, deadline: Deadline | None = None) -> None:
        words = [op, f"vif={info.link}", f"domain={self._name}", f"mac={info.mac}",
                 f"bridge={info.bridge}",
                 f"antispoof={'yes' if self._config.vif_antispoof else 'no'}"]
        if info.ips:
            words.append(f"ip={' '.join(info.ips)}")
        run_script(self._config, info.script, words,
                   what=f"vif {info.idx} ({info.link}): vif script {info.script} {op}",
                   timeout=within(deadline, SCRIPT_TIMEOUT).remaining())

    def _take_down(self, info: VifInfo, *, script: bool) -> None:
        """Script down (if it ran), disconnect, destroy; failures are logged."""
        steps: list[Callable[[], None]] = []
        if script:
            steps.append(lambda: self._script("down", info))
        what = f"vif {info.idx}"
        steps.append(lambda: self._send(m.NetifBeDisconnect(self._domid, info.idx), what))
        steps.append(lambda: self._send(m.NetifBeDestroy(self._domid, info.idx), what))
        for step in steps:
            self._run_logged(step)

    def _run_logged(self, step: Callable[[], None]) -> None:
        try:
            step()
        except XendError as error:
            log.warning("Domain %s: %s", self._domid, error.message)


class NetifProxy(ActorMemberMixin, pykka.ActorProxy[NetifController]):
    attach = proxy_method(NetifController.attach)
    configure = proxy_method(NetifController.configure)
    detach = proxy_method(NetifController.detach)
    undo = proxy_method(NetifController.undo)
    undo_change = proxy_method(NetifController.undo_change)
    adopt = proxy_method(NetifController.adopt)
    release = proxy_method(NetifController.release)
    infos = proxy_method(NetifController.infos)
    frontend = proxy_method(NetifController.frontend)
