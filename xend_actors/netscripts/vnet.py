"""Vnets on one host: a bridge plus a kernel VXLAN device, made through pyroute2's ``IPRoute``.

A vnet is one L2 segment that spans hosts. On each host it is a bridge (where the vifs
go) with a VXLAN device enslaved to it; the VXLAN network identifier (VNI) is the vnet
id, so the devices of one vnet on every host talk to each other and to nobody else.
Broadcast, unknown-unicast and multicast frames go to every peer (head-end replication:
one all-zero FDB entry per peer address) and/or to a multicast group; the VXLAN device
learns from what it receives which host each MAC lives on, so unicast then goes to
that host only.

This module owns the links of a vnet. Who made a link is written on the link itself:
each link ``vnet_up`` creates gets the alias ``xend vnet <id>`` (``ip link`` shows it).
``vnet_down`` deletes exactly the links that carry the vnet's alias, so a bridge that
existed before (the operator's) is used but never deleted, and there is no state file
to lose or to trust after a crash. A link with the vnet's name that is not its own and
cannot be used as it is is a ``Conflict``, and is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from xend_actors.errors import BadRequest, Conflict, XendError

from .bridge import _index, _is_up, _kind, _link
from .vnet_spec import ALIAS_PREFIX, Vnet

ALL_ZERO_MAC = "00:00:00:00:00:00"


def vnet_up(ipr: IPRoute, vnet: Vnet) -> None:
    """Make the vnet's bridge and VXLAN device exist as ``vnet`` says, both up.

    Safe to repeat: what exists and fits is kept; a VXLAN device of ours that no longer
    fits (another port, group, ...) is made again; the peers' FDB entries are set to
    exactly ``vnet.peers``. If it fails, the links this call created are deleted again.
    """
    made: list[int] = []
    try:
        bridge = _bridge(ipr, vnet, made)
        vxlan = _vxlan(ipr, vnet, made)
        _set_peers(ipr, vnet, vxlan)
        with _netlink(vnet, f"attach {vnet.vnetif} to bridge {vnet.bridge}"):
            if _link(ipr, vxlan).get_attr("IFLA_MASTER") != bridge:
                ipr.link("set", index=vxlan, master=bridge)
            for index in (vxlan, bridge):
                if not _is_up(_link(ipr, index)):
                    ipr.link("set", index=index, state="up")
    except BaseException:
        for index in reversed(made):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)
        raise


def vnet_down(ipr: IPRoute, vnet: Vnet) -> list[str]:
    """Delete the vnet's links that it made; the names of other ports its bridge had.

    Safe to repeat; links that are gone, or are not the vnet's own, are left as they are.
    The returned ports (vifs still on a deleted bridge) stay, detached from it.
    """
    detached: list[str] = []
    for name in (vnet.vnetif, vnet.bridge):
        index = _index(ipr, name)
        if index is None or _alias(ipr, index) != vnet.alias:
            continue
        if name == vnet.bridge:
            detached = sorted(port for port in _ports(ipr, index) if port != vnet.vnetif)
        with _netlink(vnet, f"delete {name}"):
            try:
                ipr.link("del", index=index)
            except NetlinkError as error:
                if error.code != errno.ENODEV:  # gone meanwhile
                    raise
    return detached


# --- the two links ------------------------------------------------------------------------


def _bridge(ipr: IPRoute, vnet: Vnet, made: list[int]) -> int:
    index = _index(ipr, vnet.bridge)
    if index is not None:
        link = _link(ipr, index)
        if _kind(link) != "bridge":
            raise Conflict(f"vnet {vnet.id}: {vnet.bridge} exists and is not a bridge")
        owner = _alias(ipr, index)
        if owner and owner.startswith(ALIAS_PREFIX) and owner != vnet.alias:
            raise Conflict(f"vnet {vnet.id}: bridge {vnet.bridge} belongs to "
                           f"vnet {owner.removeprefix(ALIAS_PREFIX)}")
        return index
    with _netlink(vnet, f"create bridge {vnet.bridge}"):
        ipr.link("add", ifname=vnet.bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
        index = _need(ipr, vnet, vnet.bridge)
        made.append(index)
        # The kernel ignores an alias given with "add", so it is set right after.
        ipr.link("set", index=index, ifalias=vnet.alias)
    return index


def _vxlan(ipr: IPRoute, vnet: Vnet, made: list[int]) -> int:
    index = _index(ipr, vnet.vnetif)
    if index is not None:
        if _alias(ipr, index) != vnet.alias:
            raise Conflict(f"vnet {vnet.id}: network device {vnet.vnetif} exists and "
                           "was not made for this vnet")
        if _fits(ipr, index, vnet):
            return index
        with _netlink(vnet, f"replace {vnet.vnetif}"):
            ipr.link("del", index=index)
    spec = _vxlan_spec(ipr, vnet)
    with _netlink(vnet, f"create VXLAN device {vnet.vnetif}"):
        ipr.link("add", ifname=vnet.vnetif, kind="vxlan", **spec)
        index = _need(ipr, vnet, vnet.vnetif)
        made.append(index)
        ipr.link("set", index=index, ifalias=vnet.alias)
    return index


def _vxlan_spec(ipr: IPRoute, vnet: Vnet) -> dict[str, Any]:
    spec: dict[str, Any] = {"vxlan_id": vnet.id, "vxlan_port": vnet.port,
                            "vxlan_learning": 1}
    six = any(ipaddress.ip_address(a).version == 6
              for a in (*vnet.peers, vnet.group, vnet.local) if a)
    suffix = "6" if six else ""
    if vnet.group:
        spec[f"vxlan_group{suffix}"] = vnet.group
    if vnet.local:
        spec[f"vxlan_local{suffix}"] = vnet.local
    if vnet.dev:
        index = _index(ipr, vnet.dev)
        if index is None:
            raise BadRequest(f"vnet {vnet.id}: no network device {vnet.dev} (its dev)")
        spec["vxlan_link"] = index
    return spec


def _fits(ipr: IPRoute, index: int, vnet: Vnet) -> bool:
    """True if the VXLAN device at ``index`` is what ``vnet`` asks for (peers aside)."""
    link = _link(ipr, index)
    if _kind(link) != "vxlan":
        return False
    try:
        want = _vxlan_spec(ipr, vnet)
    except BadRequest:
        return False  # its dev is gone: making it again says so
    data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")

    def have(key: str) -> Any:
        return data.get_attr("IFLA_" + key.upper())

    return (have("vxlan_id") == want["vxlan_id"] and have("vxlan_port") == want["vxlan_port"]
            and (have("vxlan_link") or None) == want.get("vxlan_link")
            and all(_same_address(have(key), want.get(key))
                    for key in ("vxlan_group", "vxlan_group6", "vxlan_local", "vxlan_local6")))


def _same_address(have: str | None, want: str | None) -> bool:
    def canonical(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        address = ipaddress.ip_address(text) if text else None
        return None if address is None or address.is_unspecified else address

    return canonical(have) == canonical(want)


def _set_peers(ipr: IPRoute, vnet: Vnet, index: int) -> None:
    """Make the all-zero FDB entries (where flooded frames go) exactly the peers."""
    wanted = {ipaddress.ip_address(peer) for peer in vnet.peers}
    group = ipaddress.ip_address(vnet.group) if vnet.group else None
    present = set()
    with _netlink(vnet, f"read the FDB of {vnet.vnetif}"):
        for entry in ipr.fdb("dump", ifindex=index):
            dst = entry.get_attr("NDA_DST")
            if entry["ifindex"] == index and entry.get_attr("NDA_LLADDR") == ALL_ZERO_MAC \
                    and dst:
                present.add(ipaddress.ip_address(dst))
    for peer in sorted(wanted - present, key=str):
        with _netlink(vnet, f"add peer {peer} to {vnet.vnetif}"):
            try:
                ipr.fdb("append", ifindex=index, lladdr=ALL_ZERO_MAC, dst=str(peer))
            except NetlinkError as error:
                if error.code != errno.EEXIST:
                    raise
    for old in sorted(present - wanted - {group}, key=str):
        with _netlink(vnet, f"remove peer {old} from {vnet.vnetif}"):
            ipr.fdb("del", ifindex=index, lladdr=ALL_ZERO_MAC, dst=str(old))


# --- helpers ------------------------------------------------------------------------------


def _alias(ipr: IPRoute, index: int) -> str | None:
    return _link(ipr, index).get_attr("IFLA_IFALIAS")


def _ports(ipr: IPRoute, bridge: int) -> list[str]:
    return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
            if link.get_attr("IFLA_MASTER") == bridge]


def _need(ipr: IPRoute, vnet: Vnet, name: str) -> int:
    index = _index(ipr, name)
    if index is None:
        raise XendError(f"vnet {vnet.id}: {name} vanished right after it was made")
    return index


@contextlib.contextmanager
def _netlink(vnet: Vnet, what: str) -> Iterator[None]:
    """A netlink failure as an error that says which step of which vnet failed."""
    try:
        yield
    except NetlinkError as error:
        reason = os.strerror(error.code) if error.code > 0 else str(error)
        kind = Conflict if error.code == errno.EEXIST else XendError
        raise kind(f"vnet {vnet.id}: cannot {what}: {reason}") from None
