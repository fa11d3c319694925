"""Xen's control-message vocabulary as values (facts §9.1-§9.4).

This module owns the messages xend exchanges with a domain and with the block and
network backends: one frozen dataclass per message, each declaring its payload layout
(``frame.py`` turns that into bytes), the packing of each to and from the 64-byte
control frame, and the check that turns a backend's non-OK status into an
``XendError``. The numbers (types, subtypes, status codes) are in ``codes.py`` and the
frame's machinery in ``frame.py``; what a user needs of them is named here too, so
``messages`` stays the one import a user needs. It owns no channel, ring or actor:
those send and receive the bytes made here.

A backend answers a request with the same message carrying its ``status``; ``check``
raises if that status is not OK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

from xend_actors.errors import BadRequest, XendError
from xend_actors.hypervisor.ring.codes import (
    UNKNOWN_HANDLE,
    BlkifBeSubtype,
    BlkifFeSubtype,
    BlkifStatus,
    ConsoleSubtype,
    DriverStatus,
    InterfaceStatus,
    MemRequestSubtype,
    MessageType,
    NetifBeSubtype,
    NetifFeSubtype,
    NetifStatus,
    ShutdownSubtype,
)
from xend_actors.hypervisor.ring.frame import (
    BLKIF_STATUS,
    DRV_STATUS,
    EXTENT,
    FRAME,
    FRAME_SIZE,
    HEADER,
    IF_STATUS,
    KEY,
    MAC,
    MAX_PAYLOAD,
    NETIF_STATUS,
    U8,
    U16,
    U32,
    Extent,
    Layout,
    MessageIds,
)

# --- messages --------------------------------------------------------------------------


class Message:
    """A control message: its type and subtype, and fields laid out by ``LAYOUT``."""

    TYPE: ClassVar[MessageType]
    SUBTYPE: ClassVar[int]
    LAYOUT: ClassVar[Layout]
    # Every message is a frozen dataclass: said here so that ``dataclasses.replace`` and
    # ``fields`` take a Message (an annotation only; each subclass's decorator sets it).
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def type(self) -> MessageType:
        return self.TYPE

    @property
    def subtype(self) -> int:
        return self.SUBTYPE

    def layout(self) -> Layout:
        return self.LAYOUT

    @classmethod
    def layout_for(cls, subtype: int) -> Layout:
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
        names = {f.name for f in fields(cls)}
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


_BLKIF_IF = Layout(12, domid=(0, U16), blkif_handle=(4, U32), status=(8, BLKIF_STATUS))
_BLKIF_VBD = Layout(16, domid=(0, U16), blkif_handle=(4, U32), vdevice=(8, U16),
                     status=(12, BLKIF_STATUS))
_NETIF_IF = Layout(12, domid=(0, U16), netif_handle=(4, U32), status=(8, NETIF_STATUS))
_FE_DRIVER = Layout(8, status=(0, DRV_STATUS), max_handle=(4, U32))


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
    LAYOUT = Layout(24, domid=(0, U16), blkif_handle=(4, U32), shmem_frame=(8, FRAME),
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
    LAYOUT = Layout(16, domid=(0, U16), blkif_handle=(4, U32), vdevice=(8, U16),
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
    LAYOUT = Layout(36, domid=(0, U16), blkif_handle=(4, U32), extent=(8, EXTENT),
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
    LAYOUT = Layout(4, status=(0, DRV_STATUS))
    status: DriverStatus


@_register()
@dataclass(frozen=True)
class BlkifFeInterfaceStatus(Message):
    TYPE = MessageType.BLKIF_FE
    SUBTYPE = BlkifFeSubtype.INTERFACE_STATUS
    LAYOUT = Layout(12, handle=(0, U32), status=(4, IF_STATUS), evtchn=(8, U16),
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
    LAYOUT = Layout(16, handle=(0, U32), shmem_frame=(8, FRAME))
    handle: int
    shmem_frame: int


@_register()
@dataclass(frozen=True)
class NetifBeCreate(Message):
    """Create network interface ``netif_handle`` with ``mac`` (``aa:bb:cc:dd:ee:ff``)."""

    TYPE = MessageType.NETIF_BE
    SUBTYPE = NetifBeSubtype.CREATE
    LAYOUT = Layout(20, domid=(0, U16), netif_handle=(4, U32), mac=(8, MAC),
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
    LAYOUT = Layout(32, domid=(0, U16), netif_handle=(4, U32), tx_shmem_frame=(8, FRAME),
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
    LAYOUT = Layout(4, status=(0, DRV_STATUS))
    status: DriverStatus


@_register()
@dataclass(frozen=True)
class NetifFeInterfaceStatus(Message):
    TYPE = MessageType.NETIF_FE
    SUBTYPE = NetifFeSubtype.INTERFACE_STATUS
    LAYOUT = Layout(18, handle=(0, U32), status=(4, IF_STATUS), evtchn=(8, U16),
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
    LAYOUT = Layout(24, handle=(0, U32), tx_shmem_frame=(8, FRAME), rx_shmem_frame=(16, FRAME))
    handle: int
    tx_shmem_frame: int
    rx_shmem_frame: int


_SHUTDOWN_EMPTY = Layout(0)
_SHUTDOWN_SYSRQ = Layout(1, key=(0, KEY))


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

    def layout(self) -> Layout:
        return self.layout_for(self.reason)

    @classmethod
    def layout_for(cls, subtype: int) -> Layout:
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
    LAYOUT = Layout(8, target=(0, U32), status=(4, U32))
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


# What a backend's answer means to the client that asked: a device or interface that is
# there already (409) or not there (404, e.g. its domain is going) is no hypervisor failure.
_HTTP_STATUS = {"INTERFACE_EXISTS": 409, "VBD_EXISTS": 409, "INTERFACE_CONNECTED": 409,
                "INTERFACE_NOT_FOUND": 404, "VBD_NOT_FOUND": 404}


def check(response: Message, device: str) -> None:
    """Raise XendError naming ``device`` and the status if a response is not OK.

    Backend messages carry a BlkifStatus or NetifStatus; a MemRequest carries a plain
    code (0 is success). Messages with no response status (frontend ones) always pass.
    """
    status = getattr(response, "status", None)
    if isinstance(status, BlkifStatus | NetifStatus):
        if status != 0:
            raise XendError(f"{device}: {_BACKENDS[type(status)]} says: {status.text}",
                            status=_HTTP_STATUS.get(status.name, 500))
    elif isinstance(response, MemRequest) and response.status != 0:
        raise XendError(f"{device}: memory request failed with status {response.status}")


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
