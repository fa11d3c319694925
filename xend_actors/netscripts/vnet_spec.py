"""What a vnet is on one host: the value the Vnets actor keeps and ``vnet.py`` makes links
of, apart from netlink, so that xend loads pyroute2 only when a vnet's links are touched.
"""

from __future__ import annotations

from dataclasses import dataclass

VXLAN_PORT = 4789  # IANA's; the kernel's own default is still Linux's old 8472
MAX_VNI = (1 << 24) - 1
ALIAS_PREFIX = "xend vnet "


@dataclass(frozen=True)
class Vnet:
    """One vnet as the kernel gets it; addresses are in ``ipaddress``'s canonical text."""

    id: int  # also the VXLAN network identifier (VNI)
    bridge: str
    vnetif: str  # the VXLAN device
    port: int = VXLAN_PORT  # UDP destination port of the tunnel
    peers: tuple[str, ...] = ()  # unicast addresses of the other hosts
    group: str | None = None  # a multicast group that reaches the other hosts
    dev: str | None = None  # the underlay device the tunnel is bound to
    local: str | None = None  # the source address of the tunnel

    @property
    def alias(self) -> str:
        """The alias that marks a link as made for this vnet."""
        return f"{ALIAS_PREFIX}{self.id}"
