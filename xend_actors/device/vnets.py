"""Vnets: the ``(vnet ...)`` config and the Vnets actor that keeps them (facts §4.4).

A vnet is a bridge plus a kernel VXLAN device (``netscripts/vnet.py``), so the vifs on
every host that has the same vnet share one L2 segment. The config, as in Xen's
``vnet97.sxp`` plus what VXLAN needs::

    (vnet (id 97)                  ; 1..16777215, also the VXLAN VNI
          (bridge vnet97)          ; default vnet<id>
          (vnetif vnetif97)        ; the VXLAN device, default vnetif<id>
          (security none)          ; only none: VXLAN neither authenticates nor encrypts
          (port 4789)              ; UDP port of the tunnel, default 4789
          (peers 10.0.0.2 ...)     ; the other hosts, each sent every flooded frame
          (group 239.1.1.97)       ; and/or a multicast group that reaches them
          (dev eth0)               ; the underlay device (needed by most multicast setups)
          (local 10.0.0.1))        ; the tunnel's source address

Everything but ``id`` is optional; a vnet with neither peers nor a group connects the
vifs of this host only. All addresses are of one family (IPv4 or IPv6); IPv6 peers
without a group need ``local``. Any other field, a repeated one (``peers`` aside) or a
bad value is a ``BadRequest``, before anything is touched. The config as reported
and stored is the canonical one, defaults filled in.

The Vnets actor owns the set of vnets and their records in the store
(``<dbroot>/vnet/<id>``); it asks the Network actor, xend's one owner of netlink, to make
and remove their links. When xend starts
it brings every stored vnet up again (links that exist and fit are kept); when xend
stops the vnets stay, like the domains that use them.
"""

from __future__ import annotations

import ipaddress
import logging
import re

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.actors import ask
from xend_actors.device.network import NetworkProxy
from xend_actors.errors import BadRequest, Conflict, NotFound, XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.netscripts.names import valid_ifname
from xend_actors.netscripts.vnet_spec import MAX_VNI, VXLAN_PORT, Vnet
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

NETLINK_TIMEOUT = 30.0

_FIELDS = ("id", "bridge", "vnetif", "security", "port", "peers", "group", "dev", "local")
_DECIMAL = re.compile(r"[0-9]{1,10}")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- the config ---------------------------------------------------------------------------


def parse_vnet_config(value: sxp.Value) -> Vnet:
    """Check ``(vnet ...)`` and convert it; a BadRequest saying why if it is not valid."""
    if not isinstance(value, list) or sxp.name(value) != "vnet":
        raise BadRequest("vnet config: expected (vnet (id N) ...)")
    _check_fields(value)
    vnet_id = _id(_single(value, "id"))
    bridge = _ifname(_single(value, "bridge") or f"vnet{vnet_id}", "bridge")
    vnetif = _ifname(_single(value, "vnetif") or f"vnetif{vnet_id}", "vnetif")
    if bridge == vnetif:
        raise BadRequest(f"vnet: bridge and vnetif are both {bridge}")
    security = _single(value, "security") or "none"
    if security != "none":
        raise BadRequest(f"vnet: security {security} is not supported; only none "
                         "(VXLAN neither authenticates nor encrypts)")
    port = _port(_single(value, "port"))
    peers = _peers(value)
    group = _address(_single(value, "group"), "group")
    if group is not None and not group.is_multicast:
        raise BadRequest(f"vnet: group {group} is not a multicast address")
    local = _address(_single(value, "local"), "local")
    if local is not None and (local.is_multicast or local.is_unspecified):
        raise BadRequest(f"vnet: local {local} is not a unicast address")
    addresses = [*peers, *(a for a in (group, local) if a is not None)]
    if len({address.version for address in addresses}) > 1:
        raise BadRequest("vnet: peers, group and local must all be IPv4 or all IPv6")
    if any(peer.version == 6 for peer in peers) and group is None and local is None:
        raise BadRequest("vnet: IPv6 peers without a group need (local ADDRESS)")
    dev = _single(value, "dev")
    return Vnet(
        id=vnet_id,
        bridge=bridge,
        vnetif=vnetif,
        port=port,
        peers=tuple(str(peer) for peer in peers),
        group=str(group) if group else None,
        dev=_ifname(dev, "dev") if dev else None,
        local=str(local) if local else None,
    )


def vnet_sxpr(vnet: Vnet) -> sxp.Value:
    """The canonical config of ``vnet``, which ``parse_vnet_config`` reads back to it."""
    config: list = ["vnet", ["id", str(vnet.id)], ["bridge", vnet.bridge],
                    ["vnetif", vnet.vnetif], ["security", "none"], ["port", str(vnet.port)]]
    if vnet.peers:
        config.append(["peers", *vnet.peers])
    for key in ("group", "dev", "local"):
        if getattr(vnet, key):
            config.append([key, getattr(vnet, key)])
    return config


def _check_fields(value: list) -> None:
    seen = set()
    for item in sxp.children(value):
        key = sxp.name(item) if isinstance(item, list) else None
        if key not in _FIELDS:
            raise BadRequest(f"vnet: unknown field {_shown(item)}")
        if key in seen and key != "peers":
            raise BadRequest(f"vnet: more than one ({key} ...)")
        seen.add(key)


def _single(value: list, key: str) -> str | None:
    element = sxp.child(value, key)
    if element is None:
        return None
    items = sxp.children(element)
    if len(items) != 1 or not isinstance(items[0], str) or not items[0]:
        raise BadRequest(f"vnet: invalid {key}: {_shown(element)}")
    return items[0]


def _id(text: str | None) -> int:
    if text is None:
        raise BadRequest("vnet: missing id")
    if not _DECIMAL.fullmatch(text) or not 1 <= int(text) <= MAX_VNI:
        raise BadRequest(f"vnet: invalid id: {text} (a whole number from 1 to {MAX_VNI}, "
                         "the VXLAN VNI)")
    return int(text)


def _ifname(text: str, what: str) -> str:
    if not valid_ifname(text):
        raise BadRequest(f"vnet: invalid {what} name: {text}")
    return text


def _port(text: str | None) -> int:
    if text is None:
        return VXLAN_PORT
    if not _DECIMAL.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise BadRequest(f"vnet: invalid port: {text}")
    return int(text)


def _address(text: str | None, what: str) -> Address | None:
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(f"vnet: invalid {what} address: {text}") from None


def _peers(value: list) -> list[Address]:
    peers: list[Address] = []
    for element in sxp.children(value, "peers"):
        for item in sxp.children(element):
            if not isinstance(item, str):
                raise BadRequest(f"vnet: invalid peer: {_shown(item)}")
            peer = _address(item, "peer")
            assert peer is not None
            if peer.is_multicast or peer.is_unspecified:
                raise BadRequest(f"vnet: peer {peer} is not a unicast address; "
                                 "a multicast group goes in (group ...)")
            if peer not in peers:
                peers.append(peer)
    return peers


def _shown(value: object) -> str:
    return value if isinstance(value, str) else sxp.show(value)


# --- the actor ----------------------------------------------------------------------------


class Vnets(TracedActor):
    """Creates, lists and deletes vnets; keeps them in the store; restores them at start."""

    def __init__(self, records: RecordDir, network: NetworkProxy,
                 events: EventBusProxy | None = None) -> None:
        super().__init__()
        self._records = records
        self._network = network
        self._events = events
        self._vnets: dict[int, Vnet] = {}

    def recover(self) -> int:
        """Bring every stored vnet up again; returns how many there are.

        A vnet whose links cannot be made now (its dev is missing, say) is kept and
        logged: the store says what the operator asked for, and a later create or xend
        start tries again.
        """
        for key, value in self._records.load_all().items():
            try:
                vnet = parse_vnet_config(value)
            except XendError as error:
                log.warning("Store record vnet/%s is unusable and left alone: %s", key, error)
                continue
            if str(vnet.id) != key:
                log.warning("Store record vnet/%s holds vnet %d; left alone", key, vnet.id)
                continue
            self._vnets[vnet.id] = vnet
            try:
                self._up(vnet)
            except XendError as error:
                log.error("Vnet %d not restored: %s", vnet.id, error)
                continue
            log.info("Vnet %d restored: bridge %s, vnetif %s", vnet.id, vnet.bridge, vnet.vnetif)
        return len(self._vnets)

    def ids(self) -> list[str]:
        return [str(vnet_id) for vnet_id in sorted(self._vnets)]

    def configs(self) -> list[sxp.Value]:
        return [vnet_sxpr(self._vnets[vnet_id]) for vnet_id in sorted(self._vnets)]

    def config(self, vnet_id: str) -> sxp.Value:
        return vnet_sxpr(self._find(vnet_id))

    def create(self, vnet: Vnet) -> sxp.Value:
        """Make the vnet's links and store it; its canonical config."""
        if vnet.id in self._vnets:
            raise Conflict(f"vnet {vnet.id} already exists")
        for other in self._vnets.values():
            shared = {vnet.bridge, vnet.vnetif} & {other.bridge, other.vnetif}
            if shared:
                raise Conflict(f"vnet {vnet.id}: {' and '.join(sorted(shared))} already "
                               f"used by vnet {other.id}")
        self._up(vnet)
        config = vnet_sxpr(vnet)
        try:
            self._records.write(str(vnet.id), config)
        except BaseException:
            self._down(vnet)
            raise
        self._vnets[vnet.id] = vnet
        log.info("Vnet %d created: bridge %s, vnetif %s", vnet.id, vnet.bridge, vnet.vnetif)
        self._publish("xend.vnet.create", str(vnet.id))
        return config

    def delete(self, vnet_id: str) -> None:
        """Remove the links the vnet made, then its record."""
        vnet = self._find(vnet_id)
        detached = self._down(vnet)
        if detached:
            log.warning("Vnet %d: its bridge %s was deleted with ports still on it: %s",
                        vnet.id, vnet.bridge, " ".join(detached))
        self._records.delete(str(vnet.id))
        del self._vnets[vnet.id]
        log.info("Vnet %d deleted", vnet.id)
        self._publish("xend.vnet.delete", str(vnet.id))

    def _find(self, vnet_id: str) -> Vnet:
        vnet = self._vnets.get(int(vnet_id)) if _DECIMAL.fullmatch(vnet_id) else None
        if vnet is None:
            raise NotFound(f"no vnet {vnet_id}")
        return vnet

    def _up(self, vnet: Vnet) -> None:
        ask(self._network.vnet_up(vnet), "the network", NETLINK_TIMEOUT)

    def _down(self, vnet: Vnet) -> list[str]:
        return ask(self._network.vnet_down(vnet), "the network", NETLINK_TIMEOUT)

    def _publish(self, name: str, value: sxp.Value) -> None:
        if self._events is not None:
            self._events.publish(name, value)


class VnetsProxy(ActorMemberMixin, pykka.ActorProxy[Vnets]):
    recover = proxy_method(Vnets.recover)
    ids = proxy_method(Vnets.ids)
    configs = proxy_method(Vnets.configs)
    config = proxy_method(Vnets.config)
    create = proxy_method(Vnets.create)
    delete = proxy_method(Vnets.delete)
