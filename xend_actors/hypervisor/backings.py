"""Backings: host files and block devices made available to a block backend, each
numbered like a loop device (``0x0700 + n``), as Xen's ``losetup`` of a ``file:`` uname
gave blkback a device to export. Both drivers' block backends keep theirs here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from xend_actors.errors import BadRequest, Conflict, NotFound

LOOP_MAJOR = 7
MAX_BACKINGS = 256  # loop0 .. loop255


@dataclass(frozen=True)
class Backing:
    """A host file or device attached as a block device."""

    device: int
    path: str
    readonly: bool
    shared: bool = False  # mode w!: other guests may use it too

    def size(self) -> int:
        """Its size in bytes now; 0 if it cannot be opened."""
        try:
            with open(self.path, "rb") as f:
                return f.seek(0, os.SEEK_END)
        except OSError:
            return 0


class Backings:
    def __init__(self) -> None:
        self._by_device: dict[int, Backing] = {}

    def attach(self, path: str, readonly: bool, shared: bool = False) -> int:
        """Check ``path`` opens as asked and number it; its device number."""
        what = f"cannot attach {path}"
        if not path or not os.path.isabs(path):
            raise BadRequest(f"{what}: the path must be absolute")
        try:
            with open(path, "rb" if readonly else "r+b"):
                pass
        except FileNotFoundError:
            raise NotFound(f"{what}: no such file") from None
        except OSError as e:
            raise Conflict(f"{what}{'' if readonly else ' read-write'}: "
                           f"{e.strerror or e}") from None
        device = next((LOOP_MAJOR << 8 | n for n in range(MAX_BACKINGS)
                       if LOOP_MAJOR << 8 | n not in self._by_device), None)
        if device is None:
            raise Conflict(f"{what}: all {MAX_BACKINGS} backing devices are in use")
        self._by_device[device] = Backing(device, path, readonly, shared)
        return device

    def get(self, device: int) -> Backing | None:
        return self._by_device.get(device)

    def need(self, device: int) -> Backing:
        backing = self._by_device.get(device)
        if backing is None:
            raise NotFound(f"no backing device {device:#06x}")
        return backing

    def detach(self, device: int) -> None:
        del self._by_device[self.need(device).device]

    def all(self) -> list[Backing]:
        return [self._by_device[d] for d in sorted(self._by_device)]
