"""The simulated block backend: Xen 2.0's blkback, answering CMSG_BLKIF_BE (facts §9.3-§9.5).

Interfaces are keyed by (frontend domid, blkif handle), vbds by vdevice within their
interface. Each request is answered with itself, its ``status`` set the way blkback's
``interface.c`` and ``vbd.c`` set it:

* create: INTERFACE_EXISTS if (domid, handle) exists; the sim also refuses a frontend
  domain that does not exist (ERROR), where blkback would fail later, at connect.
* destroy: INTERFACE_NOT_FOUND, or INTERFACE_CONNECTED unless disconnected; destroying
  an interface destroys its vbds.
* connect: INTERFACE_NOT_FOUND; MAPPING_ERROR if the frontend domain is gone (its frame
  cannot be mapped); INTERFACE_CONNECTED if already connected.
* disconnect: INTERFACE_NOT_FOUND; OKAY otherwise (also when not connected).
* vbd_create: INTERFACE_NOT_FOUND, VBD_EXISTS.
* vbd_grow: INTERFACE_NOT_FOUND, VBD_NOT_FOUND; EXTENT_NOT_FOUND if the extent's device
  is unknown or empty or the extent does not start at sector 0; a longer extent is cut
  to the device's size (blkback's ``sz`` is the size in whole KiB, as sectors).
* vbd_shrink: INTERFACE_NOT_FOUND, VBD_NOT_FOUND, EXTENT_NOT_FOUND if it has none; else
  the last extent goes.
* vbd_destroy: INTERFACE_NOT_FOUND, VBD_NOT_FOUND.

Where Xen's extent names a dom0 device number, the sim's names a *backing*: a host file
(or block device) registered by ``attach_backing`` — the sim's ``losetup`` — which
returns its device number, ``0x0700 + n`` like loop device n. A vbd reads and writes the
backing files of its extents for real, so what a guest writes survives the domain.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from xend_actors.errors import BadRequest, Conflict
from xend_actors.hypervisor.backings import Backing, Backings
from xend_actors.hypervisor.base import VbdCounters
from xend_actors.hypervisor.ring.messages import (
    BlkifBeConnect,
    BlkifBeCreate,
    BlkifBeDestroy,
    BlkifBeDisconnect,
    BlkifBeVbdCreate,
    BlkifBeVbdDestroy,
    BlkifBeVbdGrow,
    BlkifBeVbdShrink,
    BlkifStatus,
    Message,
)

SECTOR = 512


@dataclass(frozen=True)
class _Extent:
    backing: Backing
    sector_start: int
    sector_length: int


@dataclass(eq=False)
class _Vbd:
    vdevice: int
    readonly: bool
    extents: list[_Extent] = field(default_factory=list)
    # What the guest did with it, as blkback's statistics count it.
    read_bytes: int = 0
    write_bytes: int = 0
    read_ops: int = 0
    write_ops: int = 0

    @property
    def sectors(self) -> int:
        return sum(x.sector_length for x in self.extents)


@dataclass(eq=False)
class _Blkif:
    domid: int
    handle: int
    connected: bool = False
    vbds: dict[int, _Vbd] = field(default_factory=dict)


@dataclass(frozen=True)
class VbdInfo:
    """A vbd as its guest sees it."""

    vdevice: int
    sectors: int
    readonly: bool

    @property
    def size(self) -> int:
        return self.sectors * SECTOR


class BlockBackend:
    def __init__(self, domain_exists: Callable[[int], bool]) -> None:
        self._domain_exists = domain_exists
        self._blkifs: dict[tuple[int, int], _Blkif] = {}
        self._backings = Backings()
        self._handlers: dict[type, Callable[[Any], BlkifStatus]] = {
            BlkifBeCreate: self._create,
            BlkifBeDestroy: self._destroy,
            BlkifBeConnect: self._connect,
            BlkifBeDisconnect: self._disconnect,
            BlkifBeVbdCreate: self._vbd_create,
            BlkifBeVbdGrow: self._vbd_grow,
            BlkifBeVbdShrink: self._vbd_shrink,
            BlkifBeVbdDestroy: self._vbd_destroy,
        }

    # --- backings (the sim's losetup) ---------------------------------------------------

    def attach_backing(self, path: str, readonly: bool) -> int:
        return self._backings.attach(path, readonly)

    def detach_backing(self, device: int) -> None:
        self._backings.need(device)
        users = [f"{blkif.domid}/{blkif.handle}/{vbd.vdevice:#06x}"
                 for blkif in self._blkifs.values() for vbd in blkif.vbds.values()
                 if any(x.backing.device == device for x in vbd.extents)]
        if users:
            raise Conflict(f"backing device {device:#06x} is in use by vbd {', '.join(users)}")
        self._backings.detach(device)

    def backings(self) -> list[Backing]:
        return self._backings.all()

    # --- control messages --------------------------------------------------------------

    def handle(self, message: Message) -> Message:
        """The response to a CMSG_BLKIF_BE request: the request with its status set."""
        handler = self._handlers.get(type(message))
        if handler is None:
            raise BadRequest(f"the block backend takes no {type(message).__name__} request")
        return replace(message, status=handler(message))

    def domain_gone(self, domid: int) -> None:
        """Domain ``domid`` is destroyed: its interfaces and their vbds go with it."""
        for key in [key for key in self._blkifs if key[0] == domid]:
            del self._blkifs[key]

    def _create(self, m: BlkifBeCreate) -> BlkifStatus:
        key = (m.domid, m.blkif_handle)
        if key in self._blkifs:
            return BlkifStatus.INTERFACE_EXISTS
        if not self._domain_exists(m.domid):
            return BlkifStatus.ERROR
        self._blkifs[key] = _Blkif(m.domid, m.blkif_handle)
        return BlkifStatus.OKAY

    def _destroy(self, m: BlkifBeDestroy) -> BlkifStatus:
        blkif = self._blkifs.get((m.domid, m.blkif_handle))
        if blkif is None:
            return BlkifStatus.INTERFACE_NOT_FOUND
        if blkif.connected:
            return BlkifStatus.INTERFACE_CONNECTED
        del self._blkifs[(m.domid, m.blkif_handle)]
        return BlkifStatus.OKAY

    def _connect(self, m: BlkifBeConnect) -> BlkifStatus:
        blkif = self._blkifs.get((m.domid, m.blkif_handle))
        if blkif is None:
            return BlkifStatus.INTERFACE_NOT_FOUND
        if not self._domain_exists(m.domid):
            return BlkifStatus.MAPPING_ERROR
        if blkif.connected:
            return BlkifStatus.INTERFACE_CONNECTED
        blkif.connected = True
        return BlkifStatus.OKAY

    def _disconnect(self, m: BlkifBeDisconnect) -> BlkifStatus:
        blkif = self._blkifs.get((m.domid, m.blkif_handle))
        if blkif is None:
            return BlkifStatus.INTERFACE_NOT_FOUND
        blkif.connected = False
        return BlkifStatus.OKAY

    def _vbd_create(self, m: BlkifBeVbdCreate) -> BlkifStatus:
        blkif = self._blkifs.get((m.domid, m.blkif_handle))
        if blkif is None:
            return BlkifStatus.INTERFACE_NOT_FOUND
        if m.vdevice in blkif.vbds:
            return BlkifStatus.VBD_EXISTS
        blkif.vbds[m.vdevice] = _Vbd(m.vdevice, bool(m.readonly))
        return BlkifStatus.OKAY

    def _vbd_grow(self, m: BlkifBeVbdGrow) -> BlkifStatus:
        vbd = self._find_vbd(m)
        if isinstance(vbd, BlkifStatus):
            return vbd
        backing = self._backings.get(m.extent.device)
        if backing is None:
            return BlkifStatus.EXTENT_NOT_FOUND
        size = backing.size() // 1024 * 2  # blkback: blk_size (KiB) * 2 sectors
        if size == 0 or m.extent.sector_start > 0:
            return BlkifStatus.EXTENT_NOT_FOUND
        vbd.extents.append(_Extent(backing, 0, min(m.extent.sector_length, size)))
        return BlkifStatus.OKAY

    def _vbd_shrink(self, m: BlkifBeVbdShrink) -> BlkifStatus:
        vbd = self._find_vbd(m)
        if isinstance(vbd, BlkifStatus):
            return vbd
        if not vbd.extents:
            return BlkifStatus.EXTENT_NOT_FOUND
        vbd.extents.pop()
        return BlkifStatus.OKAY

    def _find_vbd(self, m: BlkifBeVbdGrow | BlkifBeVbdShrink) -> _Vbd | BlkifStatus:
        """The vbd a message names, or the status that says why there is none."""
        blkif = self._blkifs.get((m.domid, m.blkif_handle))
        if blkif is None:
            return BlkifStatus.INTERFACE_NOT_FOUND
        return blkif.vbds.get(m.vdevice, BlkifStatus.VBD_NOT_FOUND)

    def _vbd_destroy(self, m: BlkifBeVbdDestroy) -> BlkifStatus:
        blkif = self._blkifs.get((m.domid, m.blkif_handle))
        if blkif is None:
            return BlkifStatus.INTERFACE_NOT_FOUND
        if blkif.vbds.pop(m.vdevice, None) is None:
            return BlkifStatus.VBD_NOT_FOUND
        return BlkifStatus.OKAY

    def counters(self) -> dict[int, tuple[VbdCounters, ...]]:
        """Every vbd's counters, by frontend domain."""
        found: dict[int, list[VbdCounters]] = {}
        for (domid, _), blkif in sorted(self._blkifs.items()):
            found.setdefault(domid, []).extend(
                VbdCounters(v.vdevice, v.read_bytes, v.write_bytes, v.read_ops, v.write_ops)
                for v in blkif.vbds.values())
        return {domid: tuple(vbds) for domid, vbds in found.items()}

    # --- what a guest does with its vbds ------------------------------------------------

    def disks_of(self, domid: int) -> Disks:
        return Disks(self, domid)

    def _vbds(self, domid: int) -> dict[int, _Vbd]:
        found: dict[int, _Vbd] = {}
        for (owner, _), blkif in sorted(self._blkifs.items()):
            if owner == domid:
                for vdevice, vbd in blkif.vbds.items():
                    found.setdefault(vdevice, vbd)
        return found

    def _vbd(self, domid: int, vdevice: int) -> _Vbd:
        vbd = self._vbds(domid).get(vdevice)
        if vbd is None:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return vbd

    def _io(self, domid: int, vdevice: int, offset: int, length: int,
            data: bytes | None) -> bytes:
        """Read ``length`` bytes at ``offset`` (data None) or write ``data`` there."""
        vbd = self._vbd(domid, vdevice)
        writing = data is not None
        if writing and (vbd.readonly or any(x.backing.readonly for x in vbd.extents)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        size = vbd.sectors * SECTOR
        if offset < 0 or length < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if writing and offset + length > size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        length = max(0, min(length, size - offset))  # a read past the end is short
        out = bytearray()
        base = 0
        for extent in vbd.extents:
            span = extent.sector_length * SECTOR
            lo, hi = max(offset, base), min(offset + length, base + span)
            if lo < hi:
                at = extent.sector_start * SECTOR + lo - base
                try:
                    with open(extent.backing.path, "r+b" if writing else "rb") as f:
                        f.seek(at)
                        if writing:
                            assert data is not None
                            f.write(data[lo - offset:hi - offset])
                        else:
                            out += f.read(hi - lo).ljust(hi - lo, b"\0")
                except OSError:
                    raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
            base += span
        if writing:
            vbd.write_ops += 1
            vbd.write_bytes += length
        else:
            vbd.read_ops += 1
            vbd.read_bytes += length
        return bytes(out)


class Disks:
    """One domain's view of its vbds: what its simulated block frontend reaches."""

    def __init__(self, backend: BlockBackend, domid: int) -> None:
        self._backend = backend
        self._domid = domid

    def list(self) -> list[VbdInfo]:
        vbds = self._backend._vbds(self._domid)
        return [VbdInfo(v.vdevice, v.sectors, v.readonly) for _, v in sorted(vbds.items())]

    def read(self, vdevice: int, offset: int, length: int) -> bytes:
        """The bytes there; OSError (errno set) as a kernel's block layer would fail."""
        return self._backend._io(self._domid, vdevice, offset, length, None)

    def write(self, vdevice: int, offset: int, data: bytes) -> None:
        self._backend._io(self._domid, vdevice, offset, len(data), data)
