"""A simulated guest's device frontends: blkfront's and netfront's side of the handshake.

As in a Xen 2.0 guest (facts §9.5-§9.6): when the guest boots, each frontend tells
xend its driver is up (FE DRIVER_STATUS UP). xend answers with the status of each of
the domain's interfaces. DISCONNECTED asks the frontend to connect, which it does by
sending INTERFACE_CONNECT with its ring frames; CONNECTED, carrying the event channel,
completes the handshake; CHANGED asks a block frontend to re-probe its disks; CLOSED
removes the interface. Nothing here blocks: messages to xend go out through ``send``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xend_actors.hypervisor.ring.messages import (
    BlkifFeDriverStatus,
    BlkifFeInterfaceConnect,
    BlkifFeInterfaceStatus,
    DriverStatus,
    InterfaceStatus,
    Message,
    NetifFeDriverStatus,
    NetifFeInterfaceConnect,
    NetifFeInterfaceStatus,
)

FRONTEND_MESSAGES = (BlkifFeInterfaceStatus, NetifFeInterfaceStatus, NetifFeDriverStatus)


@dataclass(frozen=True)
class Interface:
    """One frontend interface as the guest sees it."""

    handle: int
    status: InterfaceStatus
    evtchn: int = 0
    mac: str = ""


class Frontends:
    def __init__(self, domid: int, send: Callable[[Message], None]) -> None:
        self._domid = domid
        self._send = send
        self.blk: dict[int, Interface] = {}
        self.net: dict[int, Interface] = {}
        self.probes = 0  # how often the block frontend probed its disks

    def boot(self) -> None:
        self._send(BlkifFeDriverStatus(DriverStatus.UP))
        self._send(NetifFeDriverStatus(DriverStatus.UP))

    def receive(self, message: Message) -> None:
        """A frontend message from xend, once the guest runs."""
        if isinstance(message, BlkifFeInterfaceStatus):
            self._status(self.blk, message.handle, message.status, message.evtchn, "")
        elif isinstance(message, NetifFeInterfaceStatus):
            self._status(self.net, message.handle, message.status, message.evtchn, message.mac)

    def blk_connected(self) -> bool:
        return any(i.status is InterfaceStatus.CONNECTED for i in self.blk.values())

    def _status(self, interfaces: dict[int, Interface], handle: int, status: InterfaceStatus,
                evtchn: int, mac: str) -> None:
        if status is InterfaceStatus.CLOSED:
            interfaces.pop(handle, None)
            return
        if status is InterfaceStatus.CHANGED:
            self.probes += 1
            return
        interfaces[handle] = Interface(handle, status, evtchn, mac)
        if status is InterfaceStatus.DISCONNECTED:
            if interfaces is self.blk:
                self._send(BlkifFeInterfaceConnect(handle, self._frame(handle, 0)))
            else:
                self._send(NetifFeInterfaceConnect(handle, self._frame(handle, 1),
                                                   self._frame(handle, 2)))

    def _frame(self, handle: int, ring: int) -> int:
        """A machine frame for a ring page: made up, but distinct per domain and ring."""
        return 0x100000 + self._domid * 0x100 + handle * 4 + ring
