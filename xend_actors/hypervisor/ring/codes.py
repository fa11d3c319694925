"""Xen's control-message numbers (facts §9.2, §9.4): message types and subtypes, the
status codes a backend answers with and their texts, and the states told to a frontend."""

from __future__ import annotations

from enum import IntEnum

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
