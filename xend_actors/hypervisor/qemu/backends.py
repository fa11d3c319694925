"""The qemu driver's device backends: Xen's control messages answered with QMP.

On Xen, domain 0's blkback and netback answer CMSG_BLKIF_BE and CMSG_NETIF_BE, and the
guest's blkfront and netfront do the frontend handshake. Under qemu the device models
are qemu's own and the guest's drivers are virtio, so this module stands in for both,
keeping xend's controllers (``device/blkif.py``, ``device/netif.py``) unchanged:

* block: an interface is a record; ``BlkifBeVbdGrow`` with a backing (``attach_backing``,
  a host file or block device) becomes ``blockdev-add`` (raw, read-only for mode r,
  without qemu's image lock for mode w!, which shares the image knowingly) and
  ``device_add virtio-blk-pci`` on the frontend domain's qemu, so the guest sees a
  ``/dev/vdX``; ``BlkifBeVbdDestroy`` is ``device_del`` (waited for until the guest lets
  go) and ``blockdev-del``. An image another qemu holds locked is a 409 (``Conflict``).
* network: ``NetifBeCreate`` is ``netdev_add tap`` with ``ifname vif<domid>.<n>`` (qemu
  makes the tap, which goes with it) and ``device_add virtio-net-pci`` with the vif's
  MAC; destroy undoes both.
* frontends: when a built guest first runs, its frontends report their drivers up; an
  interface status DISCONNECTED is answered at once with INTERFACE_CONNECT, since a
  virtio device has no rings to share. The answers reach xend as ``GuestMessage``.

A guest being restored or migrated in gets each device in the PCI slot it had at the
source (``QemuGuest.slots``, from the saved machine), since qemu's state expects it there.

Statuses follow blkback's and netback's: a QMP failure is ERROR (its text logged), an
unknown interface INTERFACE_NOT_FOUND, and so on. A domain whose guest no longer runs
(shut down, crashed, being destroyed) has its devices forgotten without asking qemu,
which is about to go.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from xend_actors.errors import BadRequest, Conflict, NotFound, XendError
from xend_actors.hypervisor.backings import Backings
from xend_actors.hypervisor.base import GuestMessage
from xend_actors.hypervisor.qemu.guest import NIC_PREFIX, QemuGuest, mac_key
from xend_actors.hypervisor.ring import messages as m

log = logging.getLogger(__name__)

UNPLUG_TIMEOUT = 20.0  # a guest's ACPI hot-unplug takes a moment, more on a busy host
UNPLUG_RETRY = 2.0  # a guest busy with another hotplug event can miss an eject request
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class _Vbd:
    readonly: bool
    plugged: bool = False


class QemuBackends:
    def __init__(self, guest_of: Callable[[int], QemuGuest],
                 notify: Callable[[GuestMessage], None]) -> None:
        self._guest_of = guest_of
        self._notify = notify
        self._backings = Backings()
        self._blkifs: set[tuple[int, int]] = set()
        self._vbds: dict[tuple[int, int], _Vbd] = {}  # (domid, vdevice)
        self._netifs: dict[tuple[int, int], str] = {}  # (domid, handle) -> mac

    # --- backings --------------------------------------------------------------------------

    def attach_backing(self, path: str, readonly: bool, shared: bool = False) -> int:
        return self._backings.attach(path, readonly, shared)

    def detach_backing(self, device: int) -> None:
        self._backings.detach(device)

    # --- control messages ------------------------------------------------------------------

    def handle(self, domid: int, message: m.Message) -> m.Message:
        """The response to a control message sent to ``domid``."""
        if message.type in (m.MessageType.BLKIF_BE, m.MessageType.NETIF_BE):
            if domid != 0:
                raise BadRequest(f"domain {domid} runs no backend: send "
                                 f"{type(message).__name__} to domain 0")
            handler = _BACKEND.get(type(message))
            if handler is None:
                raise BadRequest(f"the qemu backends take no {type(message).__name__}")
            return replace(message, status=handler(self, message))
        if message.type in (m.MessageType.BLKIF_FE, m.MessageType.NETIF_FE):
            self._guest_of(domid)  # NotFound for an unknown domain
            self._frontend(domid, message)
            return message
        raise BadRequest(f"the qemu driver takes no control message of type {message.type}")

    def guest_started(self, domid: int) -> None:
        """A built guest runs for the first time: its frontends come up."""
        for status in (m.BlkifFeDriverStatus(m.DriverStatus.UP),
                       m.NetifFeDriverStatus(m.DriverStatus.UP)):
            self._notify(GuestMessage(domid, status))

    def adopt(self, domid: int, guest: QemuGuest) -> None:
        """A new xend took over a running qemu: learn its devices back from qemu (the ids
        this module gave them), so they can be unplugged later."""
        try:
            names = _peripherals(guest)
        except XendError as error:
            log.warning("Domain %s: cannot list its devices: %s", domid, error.message)
            return
        for name in names:
            kind, _, number = name.partition("-")
            if kind == "vbd" and number.isdigit():
                self._blkifs.add((domid, 0))
                self._vbds[(domid, int(number))] = _Vbd(readonly=False, plugged=True)
            elif kind == "nic" and number.isdigit():
                self._netifs[(domid, int(number))] = ""
        self._drop_unplugged_nodes(domid, guest, names)

    def _drop_unplugged_nodes(self, domid: int, guest: QemuGuest, devices: set[str]) -> None:
        """A disk node with no device on it: a plug a killed xend cut off between the two
        (``_vbd_grow``). Left, it would refuse every later plug of that vbd by name."""
        try:
            nodes = {node.get("node-name", "") for node in
                     guest.execute("query-named-block-nodes", {"flat": True})}
            for node in sorted(n for n in nodes if _NODE.fullmatch(n) and n not in devices):
                log.warning("Domain %s: deleting disk node %s, which a stopped xend was "
                            "plugging", domid, node)
                guest.execute("blockdev-del", {"node-name": node})
        except XendError as error:
            log.warning("Domain %s: cannot look for half-plugged disks: %s", domid,
                        error.message)

    def domain_gone(self, domid: int) -> None:
        # Other domains' device work goes on meanwhile: look at copies (list() takes one
        # interpreter step) and remove only this domain's keys.
        for table in (self._vbds, self._netifs):
            for key in [key for key in list(table) if key[0] == domid]:
                table.pop(key, None)
        for key in [key for key in list(self._blkifs) if key[0] == domid]:
            self._blkifs.discard(key)

    def _frontend(self, domid: int, message: m.Message) -> None:
        disconnected = getattr(message, "status", None) is m.InterfaceStatus.DISCONNECTED
        if isinstance(message, m.BlkifFeInterfaceStatus) and disconnected:
            self._notify(GuestMessage(domid, m.BlkifFeInterfaceConnect(message.handle, 0)))
        elif isinstance(message, m.NetifFeInterfaceStatus) and disconnected:
            self._notify(GuestMessage(domid, m.NetifFeInterfaceConnect(message.handle, 0, 0)))

    # --- block -----------------------------------------------------------------------------

    def _blk_create(self, msg: m.BlkifBeCreate) -> m.BlkifStatus:
        key = (msg.domid, msg.blkif_handle)
        if key in self._blkifs:
            return m.BlkifStatus.INTERFACE_EXISTS
        if self._guest(msg.domid) is None:
            return m.BlkifStatus.ERROR
        self._blkifs.add(key)
        return m.BlkifStatus.OKAY

    def _blk_destroy(self, msg: m.BlkifBeDestroy) -> m.BlkifStatus:
        if (msg.domid, msg.blkif_handle) not in self._blkifs:
            return m.BlkifStatus.INTERFACE_NOT_FOUND
        self._blkifs.discard((msg.domid, msg.blkif_handle))
        return m.BlkifStatus.OKAY

    def _blk_connect(self, msg: m.BlkifBeConnect | m.BlkifBeDisconnect) -> m.BlkifStatus:
        if (msg.domid, msg.blkif_handle) not in self._blkifs:
            return m.BlkifStatus.INTERFACE_NOT_FOUND
        return m.BlkifStatus.OKAY

    def _vbd_create(self, msg: m.BlkifBeVbdCreate) -> m.BlkifStatus:
        if (msg.domid, msg.blkif_handle) not in self._blkifs:
            return m.BlkifStatus.INTERFACE_NOT_FOUND
        if (msg.domid, msg.vdevice) in self._vbds:
            return m.BlkifStatus.VBD_EXISTS
        self._vbds[(msg.domid, msg.vdevice)] = _Vbd(bool(msg.readonly))
        return m.BlkifStatus.OKAY

    def _vbd_grow(self, msg: m.BlkifBeVbdGrow) -> m.BlkifStatus:
        vbd = self._vbds.get((msg.domid, msg.vdevice))
        if (msg.domid, msg.blkif_handle) not in self._blkifs:
            return m.BlkifStatus.INTERFACE_NOT_FOUND
        if vbd is None:
            return m.BlkifStatus.VBD_NOT_FOUND
        backing = self._backings.get(msg.extent.device)
        if backing is None or vbd.plugged or msg.extent.sector_start != 0 or \
                backing.size() == 0:
            return m.BlkifStatus.EXTENT_NOT_FOUND  # qemu takes one whole device per vbd
        guest = self._guest(msg.domid)
        if guest is None:
            return m.BlkifStatus.MAPPING_ERROR
        node, readonly = _node(msg.vdevice), vbd.readonly or backing.readonly
        file: dict[str, Any] = {"driver": "file", "filename": backing.path,
                                "read-only": readonly}
        if backing.shared:  # w!: the user shares it knowingly, qemu's lock would refuse
            file["locking"] = "off"
        try:
            guest.execute("blockdev-add", {"driver": "raw", "node-name": node,
                                           "read-only": readonly, "file": file})
            try:
                guest.execute("device_add", {"driver": "virtio-blk-pci", "drive": node,
                                             "id": node, **guest.slot_arguments(node)})
            except XendError:
                guest.execute("blockdev-del", {"node-name": node})
                raise
        except XendError as error:
            log.error("Domain %s: plugging %s into qemu failed: %s", msg.domid, backing.path,
                      error.message)
            if _LOCKED.search(error.message):
                raise Conflict(f"disk {backing.path} is in use by another guest (a qemu "
                               "holds the image's lock); mode w! shares it") from None
            return m.BlkifStatus.ERROR
        self._vbds[(msg.domid, msg.vdevice)] = replace(vbd, plugged=True)
        return m.BlkifStatus.OKAY

    def _vbd_shrink(self, msg: m.BlkifBeVbdShrink) -> m.BlkifStatus:
        return m.BlkifStatus.EXTENT_NOT_FOUND  # qemu cannot cut a plugged disk short

    def _vbd_destroy(self, msg: m.BlkifBeVbdDestroy) -> m.BlkifStatus:
        if (msg.domid, msg.blkif_handle) not in self._blkifs:
            return m.BlkifStatus.INTERFACE_NOT_FOUND
        vbd = self._vbds.get((msg.domid, msg.vdevice))
        if vbd is None:
            return m.BlkifStatus.VBD_NOT_FOUND
        node = _node(msg.vdevice)
        if vbd.plugged and not self._unplug(msg.domid, node, [("blockdev-del",
                                                               {"node-name": node})]):
            return m.BlkifStatus.ERROR
        del self._vbds[(msg.domid, msg.vdevice)]
        return m.BlkifStatus.OKAY

    # --- network ---------------------------------------------------------------------------

    def _net_create(self, msg: m.NetifBeCreate) -> m.NetifStatus:
        key = (msg.domid, msg.netif_handle)
        if key in self._netifs:
            return m.NetifStatus.INTERFACE_EXISTS
        guest = self._guest(msg.domid)
        if guest is None:
            return m.NetifStatus.ERROR
        netdev, nic = f"net-{msg.netif_handle}", f"{NIC_PREFIX}{msg.netif_handle}"
        try:
            guest.execute("netdev_add", {"type": "tap", "id": netdev, "script": "no",
                                         "downscript": "no",
                                         "ifname": f"vif{msg.domid}.{msg.netif_handle}"})
            try:
                guest.execute("device_add", {"driver": "virtio-net-pci", "netdev": netdev,
                                             "mac": msg.mac, "id": nic,
                                             **guest.slot_arguments(mac_key(msg.mac), nic)})
            except XendError:
                guest.execute("netdev_del", {"id": netdev})
                raise
        except XendError as error:
            log.error("Domain %s: plugging vif %s into qemu failed: %s", msg.domid,
                      msg.netif_handle, error.message)
            return m.NetifStatus.ERROR
        self._netifs[key] = msg.mac
        return m.NetifStatus.OKAY

    def _net_destroy(self, msg: m.NetifBeDestroy) -> m.NetifStatus:
        key = (msg.domid, msg.netif_handle)
        if key not in self._netifs:
            return m.NetifStatus.INTERFACE_NOT_FOUND
        netdev, nic = f"net-{msg.netif_handle}", f"{NIC_PREFIX}{msg.netif_handle}"
        if not self._unplug(msg.domid, nic, [("netdev_del", {"id": netdev})]):
            return m.NetifStatus.ERROR
        del self._netifs[key]
        return m.NetifStatus.OKAY

    def _net_connect(self, msg: m.NetifBeConnect | m.NetifBeDisconnect) -> m.NetifStatus:
        if (msg.domid, msg.netif_handle) not in self._netifs:
            return m.NetifStatus.INTERFACE_NOT_FOUND
        return m.NetifStatus.OKAY

    # --- inside ----------------------------------------------------------------------------

    def _guest(self, domid: int) -> QemuGuest | None:
        try:
            return self._guest_of(domid)
        except NotFound:
            return None

    def _unplug(self, domid: int, device: str, then: list[tuple[str, dict[str, Any]]]) -> bool:
        """``device_del`` of ``device``, waited for, then the ``then`` commands; whether it
        went. A guest that no longer runs, or is about to be destroyed, keeps it until its
        qemu goes: nothing to do. A paused guest is refused (``Conflict``)."""
        guest = self._guest(domid)
        if guest is None or not guest.runs():
            return True
        if guest.is_paused():  # it could not answer: refused now rather than timed out
            raise Conflict(f"domain {domid} is paused: its guest can let go of a device only "
                           "while it runs; unpause it first")
        log.info("Domain %s: unplugging %s, waiting for the guest to let go", domid, device)
        try:
            if device in _peripherals(guest):  # else the guest let go late, after a timeout
                guest.execute("device_del", {"id": device})
            start = time.monotonic()
            asked = start
            while device in _peripherals(guest):
                if not guest.runs():  # it ended meanwhile: the device goes with its qemu
                    return True
                now = time.monotonic()
                if now - start > UNPLUG_TIMEOUT:
                    log.error("Domain %s did not let go of %s within %g s", domid, device,
                              UNPLUG_TIMEOUT)
                    return False
                if now - asked > UNPLUG_RETRY:
                    asked = now
                    with contextlib.suppress(XendError):  # "already in the process of unplug"
                        guest.execute("device_del", {"id": device})
                time.sleep(POLL_SECONDS)
            for command, arguments in then:
                # qemu lets go of a backend a moment after the device leaves the tree.
                while True:
                    try:
                        guest.execute(command, arguments)
                        break
                    except XendError:
                        if time.monotonic() - start > UNPLUG_TIMEOUT:
                            raise
                        time.sleep(POLL_SECONDS)
        except XendError as error:
            log.error("Domain %s: unplugging %s failed: %s", domid, device, error.message)
            return False
        return True


# qemu's words when another process holds the image's lock (image locking, qemu 2.10+)
_LOCKED = re.compile(r'Failed to get (shared )?"[^"]+" lock')


def _peripherals(guest: QemuGuest) -> set[str]:
    return {item["name"] for item in guest.execute("qom-list", {"path": "/machine/peripheral"})}


def _node(vdevice: int) -> str:
    return f"vbd-{vdevice}"


_NODE = re.compile(r"vbd-\d+")  # the names ``_node`` gives


_BACKEND: dict[type, Callable[[QemuBackends, Any], Any]] = {
    m.BlkifBeCreate: QemuBackends._blk_create,
    m.BlkifBeDestroy: QemuBackends._blk_destroy,
    m.BlkifBeConnect: QemuBackends._blk_connect,
    m.BlkifBeDisconnect: QemuBackends._blk_connect,
    m.BlkifBeVbdCreate: QemuBackends._vbd_create,
    m.BlkifBeVbdGrow: QemuBackends._vbd_grow,
    m.BlkifBeVbdShrink: QemuBackends._vbd_shrink,
    m.BlkifBeVbdDestroy: QemuBackends._vbd_destroy,
    m.NetifBeCreate: QemuBackends._net_create,
    m.NetifBeDestroy: QemuBackends._net_destroy,
    m.NetifBeConnect: QemuBackends._net_connect,
    m.NetifBeDisconnect: QemuBackends._net_connect,
}
