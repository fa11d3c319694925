"""The 64-byte control frame's machinery (facts §9.1, §9.3): its header and message ids,
how each kind of field goes on the wire, and the payload layouts of the messages.

The frame is ``type`` u8, ``subtype`` u8, ``id`` u8, ``length`` u8 (payload bytes used),
then a 60-byte payload. All layouts are little-endian and packed; a message declares
its fields with their byte offsets and the payload size (§9.3), and a ``Layout`` derives
the ``struct`` format, with explicit padding, from that table and checks it against the
size. Machine frames (``shmem_frame`` and friends) are Xen's ``memory_t`` plus
``MEMORY_PADDING``: 8 bytes, read here as one u64, which is the x86-32 frame number
whenever the padding is zero.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from xend_actors.errors import BadRequest
from xend_actors.hypervisor.ring.codes import (
    BlkifStatus,
    DriverStatus,
    InterfaceStatus,
    NetifStatus,
)

FRAME_SIZE = 64
HEADER = struct.Struct("<BBBB")
MAX_PAYLOAD = FRAME_SIZE - HEADER.size  # 60


@dataclass(frozen=True)
class Kind:
    """How one field goes on the wire: its struct codes and the conversions both ways."""

    code: str
    coerce: Callable[[str, Any], Any]  # (field name, value) -> canonical value, or BadRequest
    encode: Callable[[Any], tuple[Any, ...]]
    decode: Callable[[tuple[Any, ...]], Any]

    @property
    def width(self) -> int:
        return struct.calcsize("<" + self.code)

    @property
    def arity(self) -> int:
        return len(struct.unpack("<" + self.code, bytes(self.width)))


def _uint(code: str) -> Kind:
    limit = 1 << (8 * struct.calcsize("<" + code))

    def coerce(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be an integer, not {value!r}")
        if not 0 <= value < limit:
            raise BadRequest(f"{name} {value} is out of range (0..{limit - 1})")
        return int(value)

    return Kind(code, coerce, lambda v: (v,), lambda t: t[0])


def _enum(code: str, enum: type[IntEnum]) -> Kind:
    def coerce(name: str, value: Any) -> IntEnum:
        try:
            return enum(value)
        except ValueError:
            raise BadRequest(f"{name} {value!r} is not a {enum.__name__}") from None

    # decoding leaves the raw number: the message's __post_init__ coerces it, naming the field
    return Kind(code, coerce, lambda v: (int(v),), lambda t: t[0])


_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _coerce_mac(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        raise BadRequest(f"{name} {value!r} is not a MAC address like aa:bb:cc:dd:ee:ff")
    return value.lower()


def _coerce_key(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) != 1 or not value.isascii():
        raise BadRequest(f"{name} {value!r} is not a single ASCII character")
    return value


@dataclass(frozen=True)
class Extent:
    """A run of sectors of a physical device, as added to a vbd by ``BlkifBeVbdGrow``."""

    sector_start: int
    sector_length: int
    device: int

    def __post_init__(self) -> None:
        for name, kind in (("sector_start", U64), ("sector_length", U64), ("device", U16)):
            kind.coerce(f"extent {name}", getattr(self, name))


def _coerce_extent(name: str, value: Any) -> Extent:
    if not isinstance(value, Extent):
        raise BadRequest(f"{name} must be an Extent, not {value!r}")
    return value


U8 = _uint("B")
U16 = _uint("H")
U32 = _uint("I")
U64 = _uint("Q")
MAC = Kind("6s", _coerce_mac, lambda v: (bytes.fromhex(v.replace(":", "")),),
            lambda t: ":".join(f"{b:02x}" for b in t[0]))
KEY = Kind("c", _coerce_key, lambda v: (v.encode("ascii"),),
            lambda t: t[0].decode("latin-1"))
EXTENT = Kind("QQH2x", _coerce_extent,
               lambda v: (v.sector_start, v.sector_length, v.device),
               lambda t: Extent(*t))
BLKIF_STATUS = _enum("I", BlkifStatus)
NETIF_STATUS = _enum("I", NetifStatus)
IF_STATUS = _enum("I", InterfaceStatus)
DRV_STATUS = _enum("I", DriverStatus)
FRAME = U64  # memory_t + MEMORY_PADDING


class Layout:
    """A payload layout: (name, offset, kind) per field and the payload size (§9.3)."""

    def __init__(self, size: int, **spec: tuple[int, Kind]) -> None:
        self.size = size
        self.fields = tuple((name, offset, kind) for name, (offset, kind) in spec.items())
        fmt, pos = "<", 0
        for name, offset, kind in self.fields:
            if offset < pos:
                raise ValueError(f"field {name} at {offset} overlaps the one before it")
            fmt += f"{offset - pos}x" if offset > pos else ""
            fmt += kind.code
            pos = offset + kind.width
        if pos > size:
            raise ValueError(f"fields end at {pos}, past the payload size {size}")
        fmt += f"{size - pos}x" if size > pos else ""
        self.struct = struct.Struct(fmt)
        if self.struct.size != size or size > MAX_PAYLOAD:
            raise ValueError(f"layout {fmt} is {self.struct.size} bytes, not {size}")

    def pack(self, message: object) -> bytes:
        values: list[Any] = []
        for name, _, kind in self.fields:
            values.extend(kind.encode(getattr(message, name)))
        return self.struct.pack(*values)

    def unpack(self, payload: bytes) -> dict[str, Any]:
        flat = iter(self.struct.unpack(payload))
        out = {}
        for name, _, kind in self.fields:
            out[name] = kind.decode(tuple(next(flat) for _ in range(kind.arity)))
        return out


class MessageIds:
    """Xen's global message-id counter (§9.1): a u8 that wraps; safe across threads."""

    def __init__(self, start: int = 0) -> None:
        self._next = start & 0xFF
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            msg_id = self._next
            self._next = (msg_id + 1) & 0xFF
            return msg_id
