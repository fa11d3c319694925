"""The simulated network backend: Xen 2.0's netback, answering CMSG_NETIF_BE (facts §9.6).

Interfaces are keyed by (frontend domid, netif handle). Each request is answered with
itself, its ``status`` set the way netback's ``interface.c`` sets it:

* create: INTERFACE_EXISTS if (domid, handle) exists; ERROR if the frontend domain does
  not exist or its backend link cannot be made.
* destroy: INTERFACE_NOT_FOUND, or INTERFACE_CONNECTED unless disconnected.
* connect: INTERFACE_NOT_FOUND; MAPPING_ERROR if the frontend domain is gone;
  INTERFACE_CONNECTED if already connected.
* disconnect: INTERFACE_NOT_FOUND; OKAY otherwise.

Like netback, each interface has a backend link ``vif<domid>.<handle>`` on the host:
with ``taps`` on, a real tap device that xend-simhv holds open (it vanishes when the
interface is destroyed, or with xend-simhv), so the vif scripts act on a real link.
Making one needs CAP_NET_ADMIN; without it the create is answered ERROR and the
reason is logged.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from xend_actors.errors import BadRequest
from xend_actors.hypervisor.base import VifCounters
from xend_actors.hypervisor.ring.messages import (
    Message,
    NetifBeConnect,
    NetifBeCreate,
    NetifBeDestroy,
    NetifBeDisconnect,
    NetifStatus,
)

log = logging.getLogger("xend-simhv")

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def link_name(domid: int, handle: int) -> str:
    """The backend link of a vif: ``vif<domid>.<handle>`` (facts §9.7)."""
    return f"vif{domid}.{handle}"


def open_tap(name: str) -> int:
    """A new tap device called ``name``, held by the returned descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass(eq=False)
class _Netif:
    domid: int
    handle: int
    mac: str
    tap: int | None = None  # the descriptor that holds the backend link
    connected: bool = False
    sent_bytes: int = 0  # what the guest sent on it (the sim's guests receive nothing)
    sent_packets: int = 0


@dataclass(frozen=True)
class NetifInfo:
    """An interface as the backend has it."""

    domid: int
    handle: int
    mac: str
    link: str | None
    connected: bool


class NetBackend:
    def __init__(self, domain_exists: Callable[[int], bool], *, taps: bool) -> None:
        self._domain_exists = domain_exists
        self._taps = taps
        self._netifs: dict[tuple[int, int], _Netif] = {}
        self._handlers: dict[type, Callable[[Any], NetifStatus]] = {
            NetifBeCreate: self._create,
            NetifBeDestroy: self._destroy,
            NetifBeConnect: self._connect,
            NetifBeDisconnect: self._disconnect,
        }

    def handle(self, message: Message) -> Message:
        """The response to a CMSG_NETIF_BE request: the request with its status set."""
        handler = self._handlers.get(type(message))
        if handler is None:
            raise BadRequest(f"the network backend takes no {type(message).__name__} request")
        return replace(message, status=handler(message))

    def interfaces(self, domid: int) -> list[NetifInfo]:
        return [NetifInfo(n.domid, n.handle, n.mac,
                          link_name(n.domid, n.handle) if n.tap is not None else None,
                          n.connected)
                for key, n in sorted(self._netifs.items()) if key[0] == domid]

    def transmit(self, domid: int, handle: int, frame: bytes) -> None:
        """A frame the guest sends on interface ``handle``: into its backend link, where
        the host receives it (and the vif's filters judge it). OSError as a NIC fails."""
        netif = self._netifs.get((domid, handle))
        if netif is None or not netif.connected:
            raise OSError(errno.ENETDOWN, os.strerror(errno.ENETDOWN))
        if netif.tap is None:
            raise OSError(errno.ENODEV, "no backend link (xend-simhv runs without --taps)")
        os.write(netif.tap, frame)
        netif.sent_bytes += len(frame)
        netif.sent_packets += 1

    def counters(self) -> dict[int, tuple[VifCounters, ...]]:
        """Every interface's counters, by frontend domain."""
        found: dict[int, list[VifCounters]] = {}
        for (domid, handle), n in sorted(self._netifs.items()):
            found.setdefault(domid, []).append(
                VifCounters(handle, rx_bytes=0, tx_bytes=n.sent_bytes, rx_packets=0,
                            tx_packets=n.sent_packets))
        return {domid: tuple(vifs) for domid, vifs in found.items()}

    def domain_gone(self, domid: int) -> None:
        """Domain ``domid`` is destroyed: its interfaces and their links go with it."""
        for key in [key for key in self._netifs if key[0] == domid]:
            self._drop(self._netifs.pop(key))

    def close(self) -> None:
        for netif in self._netifs.values():
            self._drop(netif)
        self._netifs.clear()

    def _create(self, m: NetifBeCreate) -> NetifStatus:
        key = (m.domid, m.netif_handle)
        if key in self._netifs:
            return NetifStatus.INTERFACE_EXISTS
        if not self._domain_exists(m.domid):
            return NetifStatus.ERROR
        netif = _Netif(m.domid, m.netif_handle, m.mac)
        if self._taps:
            name = link_name(m.domid, m.netif_handle)
            try:
                netif.tap = open_tap(name)
            except OSError as e:
                log.error("Cannot make the backend link %s: %s", name, e.strerror or e)
                return NetifStatus.ERROR
        self._netifs[key] = netif
        return NetifStatus.OKAY

    def _destroy(self, m: NetifBeDestroy) -> NetifStatus:
        netif = self._netifs.get((m.domid, m.netif_handle))
        if netif is None:
            return NetifStatus.INTERFACE_NOT_FOUND
        if netif.connected:
            return NetifStatus.INTERFACE_CONNECTED
        self._drop(self._netifs.pop((m.domid, m.netif_handle)))
        return NetifStatus.OKAY

    def _connect(self, m: NetifBeConnect) -> NetifStatus:
        netif = self._netifs.get((m.domid, m.netif_handle))
        if netif is None:
            return NetifStatus.INTERFACE_NOT_FOUND
        if not self._domain_exists(m.domid):
            return NetifStatus.MAPPING_ERROR
        if netif.connected:
            return NetifStatus.INTERFACE_CONNECTED
        netif.connected = True
        return NetifStatus.OKAY

    def _disconnect(self, m: NetifBeDisconnect) -> NetifStatus:
        netif = self._netifs.get((m.domid, m.netif_handle))
        if netif is None:
            return NetifStatus.INTERFACE_NOT_FOUND
        netif.connected = False
        return NetifStatus.OKAY

    @staticmethod
    def _drop(netif: _Netif) -> None:
        if netif.tap is not None:
            os.close(netif.tap)
            netif.tap = None
