"""Control messages: the 64-byte requests xend sends to a domain or its backends (facts §9).

A message is a type, a subtype and a payload of at most 60 bytes; the answer is a
message with the same type and subtype. xend-simhv routes each message by its type
to a handler (``SimHypervisor.control_handlers``): the guest takes CMSG_SHUTDOWN;
the block and network backends will take theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from xend_actors.errors import BadRequest

CMSG_CONSOLE = 0
CMSG_BLKIF_BE = 1
CMSG_BLKIF_FE = 2
CMSG_NETIF_BE = 3
CMSG_NETIF_FE = 4
CMSG_SHUTDOWN = 6
CMSG_MEM_REQUEST = 7

MAX_PAYLOAD = 60


@dataclass(frozen=True)
class ControlMessage:
    type: int
    subtype: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not (0 <= self.type <= 255 and 0 <= self.subtype <= 255):
            raise BadRequest(f"control message type {self.type} subtype {self.subtype} "
                             "is out of range (0..255)")
        if len(self.payload) > MAX_PAYLOAD:
            raise BadRequest(f"control message payload of {len(self.payload)} bytes "
                             f"is longer than {MAX_PAYLOAD}")

    def answer(self, payload: bytes = b"") -> ControlMessage:
        """The response to this message: same type and subtype."""
        return ControlMessage(self.type, self.subtype, payload)
