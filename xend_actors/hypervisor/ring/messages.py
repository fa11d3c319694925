"""Xen's control-message vocabulary as values (facts §9.1-§9.4).

This module owns the wire form of the messages xend exchanges with a domain and with the
block and network backends: the message types and subtypes, the status codes and their
texts, one frozen dataclass per message, the packing of each to and from the 64-byte
control frame, the check that turns a backend's non-OK status into an ``XendError``, and
the global message-id counter. It owns no channel, ring or actor: those send and receive
the bytes made here.

The frame is ``type`` u8, ``subtype`` u8, ``id`` u8, ``length`` u8 (payload bytes used),
then a 60-byte payload. All layouts are little-endian and packed; each message declares
its fields with their byte offsets and the payload size (§9.3), and the ``struct``
format, with explicit padding, is derived from that table and checked against the size.

A backend answers a request with the same message carrying its ``status``; ``check``
raises if that status is not OK. Machine frames (``shmem_frame`` and friends) are Xen's
``memory_t`` plus ``MEMORY_PADDING``: 8 bytes, read here as one u64, which is the x86-32
frame number whenever the padding is zero.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar

from xend_actors.errors import BadRequest, XendError

FRAME_SIZE = 64
HEADER = struct.Struct("<BBBB")
MAX_PAYLOAD = FRAME_SIZE - HEADER.size  # 60

UNKNOWN_HANDLE = 0xFFFF_FFFF
"""Handle -1 as a u32: what a frontend query for an unknown interface is answered with."""


# --- types and subtypes (§9.2) ---------------------------------------------------------


class MessageType(IntEnum):
    CMSG_CONSOLE = 0
    BLKIF_BE = 1
    BLKIF_FE = 2
    NETIF_BE = 3
    NETIF_FE = 4
    SHUTDOWN = 6
    MEM_REQUEST = 7


class ConsoleSubtype(IntEnum):
    DATA = 0


class BlkifBeSubtype(IntEnum):
    CREATE = 0
    DESTROY = 1
    CONNECT = 2
    DISCONNECT = 3
    VBD_CREATE = 4
    VBD_DESTROY = 5
    VBD_GROW = 6
    VBD_SHRINK = 7
    DRIVER_STATUS = 32


class BlkifFeSubtype(IntEnum):
    INTERFACE_STATUS = 0
    DRIVER_STATUS = 32
    INTERFACE_CONNECT = 33
    INTERFACE_DISCONNECT = 34
    INTERFACE_QUERY = 35


class NetifBeSubtype(IntEnum):
    CREATE = 0
    DESTROY = 1
    CONNECT = 2
    DISCONNECT = 3
    DRIVER_STATUS = 32


class NetifFeSubtype(IntEnum):
    INTERFACE_STATUS = 0
    DRIVER_STATUS = 32
    INTERFACE_CONNECT = 33
    INTERFACE_DISCONNECT = 34
    INTERFACE_QUERY = 35


class ShutdownSubtype(IntEnum):
    POWEROFF = 0
    REBOOT = 1
    SUSPEND = 2
    SYSRQ = 3


class MemRequestSubtype(IntEnum):
    SET = 0


# --- status codes (§9.4) ---------------------------------------------------------------


class _Status(IntEnum):
    """An IntEnum whose members also carry Xen's text for the code."""

    text: str

    def __new__(cls, value: int, text: str) -> _Status:
        member = int.__new__(cls, value)
        member._value_ = value
        member.text = text
        return member


class BlkifStatus(_Status):
    """BLKIF_BE_STATUS_*: the status a block backend answers with."""

    OKAY = 0, "Okay"
    ERROR = 1, "Non-specific error"
    INTERFACE_EXISTS = 2, "Interface already exists"
    INTERFACE_NOT_FOUND = 3, "Interface not found"
    INTERFACE_CONNECTED = 4, "Interface is still connected"
    VBD_EXISTS = 5, "VBD already exists"
    VBD_NOT_FOUND = 6, "VBD not found"
    OUT_OF_MEMORY = 7, "Out of memory"
    EXTENT_NOT_FOUND = 8, "Extent not found for VBD"
    MAPPING_ERROR = 9, "Could not map domain memory"


class NetifStatus(_Status):
    """NETIF_BE_STATUS_*: the status a network backend answers with."""

    OKAY = 0, "Okay"
    ERROR = 1, "Non-specific error"
    INTERFACE_EXISTS = 2, "Interface already exists"
    INTERFACE_NOT_FOUND = 3, "Interface not found"
    INTERFACE_CONNECTED = 4, "Interface is still connected"
    OUT_OF_MEMORY = 5, "Out of memory"
    MAPPING_ERROR = 6, "Could not map domain memory"


class InterfaceStatus(IntEnum):
    """The state of an interface as told to a frontend."""

    CLOSED = 0
    DISCONNECTED = 1
    CONNECTED = 2
    CHANGED = 3


class DriverStatus(IntEnum):
    DOWN = 0
    UP = 1


# --- field kinds and layouts -----------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
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


def _uint(code: str) -> _Kind:
    limit = 1 << (8 * struct.calcsize("<" + code))

    def coerce(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be an integer, not {value!r}")
        if not 0 <= value < limit:
            raise BadRequest(f"{name} {value} is out of range (0..{limit - 1})")
        return int(value)

    return _Kind(code, coerce, lambda v: (v,), lambda t: t[0])


def _enum(code: str, enum: type[IntEnum]) -> _Kind:
    def coerce(name: str, value: Any) -> IntEnum:
        try:
            return enum(value)
        except ValueError:
            raise BadRequest(f"{name} {value!r} is not a {enum.__name__}") from None

    # decoding leaves the raw number: the message's __post_init__ coerces it, naming the field
    return _Kind(code, coerce, lambda v: (int(v),), lambda t: t[0])


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
MAC = _Kind("6s", _coerce_mac, lambda v: (bytes.fromhex(v.replace(":", "")),),
            lambda t: ":".join(f"{b:02x}" for b in t[0]))
KEY = _Kind("c", _coerce_key, lambda v: (v.encode("ascii"),),
            lambda t: t[0].decode("latin-1"))
EXTENT = _Kind("QQH2x", _coerce_extent,
               lambda v: (v.sector_start, v.sector_length, v.device),
               lambda t: Extent(*t))
BLKIF_STATUS = _enum("I", BlkifStatus)
NETIF_STATUS = _enum("I", NetifStatus)
IF_STATUS = _enum("I", InterfaceStatus)
DRV_STATUS = _enum("I", DriverStatus)
FRAME = U64  # memory_t + MEMORY_PADDING


class _Layout:
    """A payload layout: (name, offset, kind) per field and the payload size (§9.3)."""

    def __init__(self, size: int, **spec: tuple[int, _Kind]) -> None:
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

    def pack(self, message: Message) -> bytes:
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


# --- messages --------------------------------------------------------------------------


class Message:
    """A control message: its type and subtype, and fields laid out by ``LAYOUT``."""

    TYPE: ClassVar[MessageType]
    SUBTYPE: ClassVar[int]
    LAYOUT: ClassVar[_Layout]

    @property
    def type(self) -> MessageType:
        return self.TYPE

    @property
    def subtype(self) -> int:
        return self.SUBTYPE

    def layout(self) -> _Layout:
        return self.LAYOUT

    @classmethod
    def layout_for(cls, subtype: int) -> _Layout:
        return cls.LAYOUT

    @classmethod
    def from_fields(cls, subtype: int, values: dict[str, Any]) -> Message:
        return cls(**values)

    def __post_init__(self) -> None:
        for name, _, kind in self.layout().fields:
            object.__setattr__(self, name, kind.coerce(name, getattr(self, name)))


_REGISTRY: dict[tuple[int, int], type[Message]] = {}


def _register(*subtypes: int) -> Callable[[type[Message]], type[Message]]:
    """Enter a message class for (its TYPE, each subtype), checking its table against it."""

    def register(cls: type[Message]) -> type[Message]:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for subtype in subtypes or (cls.SUBTYPE,):
            laid = {name for name, _, _ in cls.layout_for(subtype).fields}
            if not laid <= names:
                raise TypeError(f"{cls.__name__} lays out fields it lacks: {laid - names}")
            key = (int(cls.TYPE), int(subtype))
            if key in _REGISTRY:
                raise TypeError(f"{key} already belongs to {_REGISTRY[key].__name__}")
            _REGISTRY[key] = cls
        return cls

    return register


_BLKIF_IF = _Layout(12, domid=(0, U16), blkif_handle=(4, U32), status=(8, BLKIF_STATUS))
_BLKIF_VBD = _Layout(16, domid=(0, U16), blkif_handle=(4, U32), vdevice=(8, U16),
                     status=(12, BLKIF_STATUS))
_NETIF_IF = _Layout(12, domid=(0, U16), netif_handle=(4, U32), status=(8, NETIF_STATUS))
_FE_DRIVER = _Layout(8, status=(0, DRV_STATUS), max_handle=(4, U32))


@_register()
@dataclass(frozen=True)
class BlkifBeCreate(Message):
    """Create block interface ``blkif_handle`` for domain ``domid`` in the backend."""

    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.CREATE
    LAYOUT = _BLKIF_IF
    domid: int
    blkif_handle: int = 0
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeDestroy(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.DESTROY
    LAYOUT = _BLKIF_IF
    domid: int
    blkif_handle: int = 0
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeConnect(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.CONNECT
    LAYOUT = _Layout(24, domid=(0, U16), blkif_handle=(4, U32), shmem_frame=(8, FRAME),
                     evtchn=(16, U32), status=(20, BLKIF_STATUS))
    domid: int
    blkif_handle: int
    shmem_frame: int
    evtchn: int
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeDisconnect(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.DISCONNECT
    LAYOUT = _BLKIF_IF
    domid: int
    blkif_handle: int = 0
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeVbdCreate(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.VBD_CREATE
    LAYOUT = _Layout(16, domid=(0, U16), blkif_handle=(4, U32), vdevice=(8, U16),
                     readonly=(10, U16), status=(12, BLKIF_STATUS))
    domid: int
    blkif_handle: int
    vdevice: int
    readonly: int = 0
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeVbdDestroy(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.VBD_DESTROY
    LAYOUT = _BLKIF_VBD
    domid: int
    blkif_handle: int
    vdevice: int
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeVbdGrow(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.VBD_GROW
    LAYOUT = _Layout(36, domid=(0, U16), blkif_handle=(4, U32), extent=(8, EXTENT),
                     vdevice=(28, U16), status=(32, BLKIF_STATUS))
    domid: int
    blkif_handle: int
    vdevice: int
    extent: Extent
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeVbdShrink(Message):
    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.VBD_SHRINK
    LAYOUT = _BLKIF_VBD
    domid: int
    blkif_handle: int
    vdevice: int
    status: BlkifStatus = BlkifStatus.OKAY


@_register()
@dataclass(frozen=True)
class BlkifBeDriverStatus(Message):
    """The block backend's driver reporting its status (sent by the backend)."""

    TYPE = MessageType.BLKIF_BE
    SUBTYPE = BlkifBeSubtype.DRIVER_STATUS
    LAYOUT = _Layout(4, status=(0, DRV_STATUS))
    status: DriverStatus


@_register()
@dataclass(frozen=True)
class BlkifFeInterfaceStatus(Message):
    TYPE = MessageType.BLKIF_FE
    SUBTYPE = BlkifFeSubtype.INTERFACE_STATUS
    LAYOUT = _Layout(12, handle=(0, U32), status=(4, IF_STATUS), evtchn=(8, U16),
                     domid=(10, U16))
    handle: int
    status: InterfaceStatus
    evtchn: int = 0
    domid: int = 0


@_register()
@dataclass(frozen=True)
class BlkifFeDriverStatus(Message):
    TYPE = MessageType.BLKIF_FE
    SUBTYPE = BlkifFeSubtype.DRIVER_STATUS
    LAYOUT = _FE_DRIVER
    status: DriverStatus
    max_handle: int = 0


@_register()
@dataclass(frozen=True)
class BlkifFeInterfaceConnect(Message):
    TYPE = MessageType.BLKIF_FE
    SUBTYPE = BlkifFeSubtype.INTERFACE_CONNECT
    LAYOUT = _Layout(16, handle=(0, U32), shmem_frame=(8, FRAME))
    handle: int
    shmem_frame: int


@_register()
@dataclass(frozen=True)
class NetifBeCreate(Message):
    """Create network interface ``netif_handle`` with ``mac`` (``aa:bb:cc:dd:ee:ff``)."""

    TYPE = MessageType.NETIF_BE
    SUBTYPE = NetifBeSubtype.CREATE
    LAYOUT = _Layout(20, domid=(0, U16), netif_handle=(4, U32), mac=(8, MAC),
                     status=(16, NETIF_STATUS))
    domid: int
    netif_handle: int
    mac: str
    status: NetifStatus = NetifStatus.OKAY


@_register()
@dataclass(frozen=True)
class NetifBeDestroy(Message):
    TYPE = MessageType.NETIF_BE
    SUBTYPE = NetifBeSubtype.DESTROY
    LAYOUT = _NETIF_IF
    domid: int
    netif_handle: int
    status: NetifStatus = NetifStatus.OKAY


@_register()
@dataclass(frozen=True)
class NetifBeConnect(Message):
    TYPE = MessageType.NETIF_BE
    SUBTYPE = NetifBeSubtype.CONNECT
    LAYOUT = _Layout(32, domid=(0, U16), netif_handle=(4, U32), tx_shmem_frame=(8, FRAME),
                     rx_shmem_frame=(16, FRAME), evtchn=(24, U16), status=(28, NETIF_STATUS))
    domid: int
    netif_handle: int
    tx_shmem_frame: int
    rx_shmem_frame: int
    evtchn: int
    status: NetifStatus = NetifStatus.OKAY


@_register()
@dataclass(frozen=True)
class NetifBeDisconnect(Message):
    TYPE = MessageType.NETIF_BE
    SUBTYPE = NetifBeSubtype.DISCONNECT
    LAYOUT = _NETIF_IF
    domid: int
    netif_handle: int
    status: NetifStatus = NetifStatus.OKAY


@_register()
@dataclass(frozen=True)
class NetifBeDriverStatus(Message):
    """The network backend's driver reporting its status (sent by the backend)."""

    TYPE = MessageType.NETIF_BE
    SUBTYPE = NetifBeSubtype.DRIVER_STATUS
    LAYOUT = _Layout(4, status=(0, DRV_STATUS))
    status: DriverStatus


@_register()
@dataclass(frozen=True)
class NetifFeInterfaceStatus(Message):
    TYPE = MessageType.NETIF_FE
    SUBTYPE = NetifFeSubtype.INTERFACE_STATUS
    LAYOUT = _Layout(18, handle=(0, U32), status=(4, IF_STATUS), evtchn=(8, U16),
                     mac=(10, MAC), domid=(16, U16))
    handle: int
    status: InterfaceStatus
    evtchn: int = 0
    mac: str = "00:00:00:00:00:00"
    domid: int = 0


@_register()
@dataclass(frozen=True)
class NetifFeDriverStatus(Message):
    TYPE = MessageType.NETIF_FE
    SUBTYPE = NetifFeSubtype.DRIVER_STATUS
    LAYOUT = _FE_DRIVER
    status: DriverStatus
    max_handle: int = 0


@_register()
@dataclass(frozen=True)
class NetifFeInterfaceConnect(Message):
    TYPE = MessageType.NETIF_FE
    SUBTYPE = NetifFeSubtype.INTERFACE_CONNECT
    LAYOUT = _Layout(24, handle=(0, U32), tx_shmem_frame=(8, FRAME), rx_shmem_frame=(16, FRAME))
    handle: int
    tx_shmem_frame: int
    rx_shmem_frame: int


_SHUTDOWN_EMPTY = _Layout(0)
_SHUTDOWN_SYSRQ = _Layout(1, key=(0, KEY))


@_register(*ShutdownSubtype)
@dataclass(frozen=True)
class Shutdown(Message):
    """Ask a guest to shut down; the subtype is the reason, SYSRQ carries the key."""

    TYPE = MessageType.SHUTDOWN
    reason: ShutdownSubtype
    key: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "reason", ShutdownSubtype(self.reason))
        except ValueError:
            raise BadRequest(f"shutdown reason {self.reason!r} is not known") from None
        if self.reason is not ShutdownSubtype.SYSRQ and self.key is not None:
            raise BadRequest(f"a {self.reason.name} shutdown carries no sysrq key")
        if self.reason is ShutdownSubtype.SYSRQ and self.key is None:
            raise BadRequest("a SYSRQ shutdown needs a key")
        super().__post_init__()

    @property
    def subtype(self) -> int:
        return self.reason

    def layout(self) -> _Layout:
        return self.layout_for(self.reason)

    @classmethod
    def layout_for(cls, subtype: int) -> _Layout:
        return _SHUTDOWN_SYSRQ if subtype == ShutdownSubtype.SYSRQ else _SHUTDOWN_EMPTY

    @classmethod
    def from_fields(cls, subtype: int, values: dict[str, Any]) -> Message:
        return cls(ShutdownSubtype(subtype), **values)


@_register()
@dataclass(frozen=True)
class MemRequest(Message):
    """Ask a guest's balloon driver for a memory target in pages; ``status`` 0 is success."""

    TYPE = MessageType.MEM_REQUEST
    SUBTYPE = MemRequestSubtype.SET
    LAYOUT = _Layout(8, target=(0, U32), status=(4, U32))
    target: int
    status: int = 0


MESSAGES: tuple[type[Message], ...] = tuple(dict.fromkeys(_REGISTRY.values()))
"""Every message class, in the order of §9.3."""


# --- the frame -------------------------------------------------------------------------


def pack(message: Message, msg_id: int) -> bytes:
    """The 64-byte frame carrying ``message`` with id ``msg_id``."""
    U8.coerce("message id", msg_id)
    payload = message.layout().pack(message)
    header = HEADER.pack(message.type, message.subtype, msg_id, len(payload))
    return header + payload.ljust(MAX_PAYLOAD, b"\0")


def unpack(frame: bytes) -> tuple[int, Message]:
    """The id and message of a 64-byte frame; BadRequest if it is not a known, whole one."""
    if len(frame) != FRAME_SIZE:
        raise BadRequest(f"a control frame is {FRAME_SIZE} bytes, not {len(frame)}")
    type_, subtype, msg_id, length = HEADER.unpack_from(frame)
    cls = _REGISTRY.get((type_, subtype))
    if cls is None:
        raise BadRequest(f"unknown control message type {type_} subtype {subtype}")
    layout = cls.layout_for(subtype)
    if length != layout.size:
        raise BadRequest(f"{cls.__name__} has a {layout.size}-byte payload, "
                         f"but the frame says {length}")
    payload = bytes(frame[HEADER.size:HEADER.size + length])
    return msg_id, cls.from_fields(subtype, layout.unpack(payload))


# --- responses -------------------------------------------------------------------------

_BACKENDS = {BlkifStatus: "blkif backend", NetifStatus: "netif backend"}


def check(response: Message, device: str) -> None:
    """Raise XendError naming ``device`` and the status if a response is not OK.

    Backend messages carry a BlkifStatus or NetifStatus; a MemRequest carries a plain
    code (0 is success). Messages with no response status (frontend ones) always pass.
    """
    status = getattr(response, "status", None)
    if isinstance(status, BlkifStatus | NetifStatus):
        if status != 0:
            raise XendError(f"{device}: {_BACKENDS[type(status)]} says: {status.text}")
    elif isinstance(response, MemRequest) and response.status != 0:
        raise XendError(f"{device}: memory request failed with status {response.status}")


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


__all__ = [
    "FRAME_SIZE",
    "MAX_PAYLOAD",
    "MESSAGES",
    "UNKNOWN_HANDLE",
    "BlkifBeConnect",
    "BlkifBeCreate",
    "BlkifBeDestroy",
    "BlkifBeDisconnect",
    "BlkifBeDriverStatus",
    "BlkifBeSubtype",
    "BlkifBeVbdCreate",
    "BlkifBeVbdDestroy",
    "BlkifBeVbdGrow",
    "BlkifBeVbdShrink",
    "BlkifFeDriverStatus",
    "BlkifFeInterfaceConnect",
    "BlkifFeInterfaceStatus",
    "BlkifFeSubtype",
    "BlkifStatus",
    "ConsoleSubtype",
    "DriverStatus",
    "Extent",
    "InterfaceStatus",
    "MemRequest",
    "MemRequestSubtype",
    "Message",
    "MessageIds",
    "MessageType",
    "NetifBeConnect",
    "NetifBeCreate",
    "NetifBeDestroy",
    "NetifBeDisconnect",
    "NetifBeDriverStatus",
    "NetifBeSubtype",
    "NetifFeDriverStatus",
    "NetifFeInterfaceConnect",
    "NetifFeInterfaceStatus",
    "NetifFeSubtype",
    "NetifStatus",
    "Shutdown",
    "ShutdownSubtype",
    "check",
    "pack",
    "unpack",
]
