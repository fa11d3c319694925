"""What a console looks like from outside: its status and its info SXP (facts §8).

Decision on the original's quirk (facts §15 item 14): the original named a console
by its event-channel port on the debug port and by its TCP port over HTTP. Here the
console's TCP port is its id everywhere (HTTP, the debug port, events, ``xm
consoles``). There is no event channel behind a console in this design, so the info
keeps the original's fields with the values its ids implied: ``local_port`` equals
the id (as it did in the original) and ``remote_port`` is 1, the guest's end of the
console channel in every Xen 2.0 build.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from xend_actors import sxp

REMOTE_PORT = 1


class Status(Enum):
    NEW = "new"  # made, not yet listening
    LISTENING = "listening"  # waiting for a client
    CONNECTED = "connected"  # one client attached
    CLOSED = "closed"  # the domain is gone; only the scrollback is left


@dataclass(frozen=True)
class ConsoleInfo:
    port: int
    domid: int
    status: Status
    client: tuple[str, int] | None = None  # the connected client's host and port
    # Its TCP port is open (console-tcp yes). Not in the SXP: the original's fields stay
    # as they were, and the API's attach works either way; the pages offer telnet by it.
    tcp: bool = False

    @property
    def id(self) -> int:
        return self.port

    def sxpr(self) -> sxp.Value:
        """``(console (status S) (id ID) (domain D) (local_port L) (remote_port R)
        (console_port P) [(connected HOST PORT)])``."""
        info: list = ["console", ["status", self.status.value], ["id", str(self.id)],
                      ["domain", str(self.domid)], ["local_port", str(self.id)],
                      ["remote_port", str(REMOTE_PORT)], ["console_port", str(self.port)]]
        if self.client is not None:
            info.append(["connected", self.client[0], str(self.client[1])])
        return info
