"""A vnet's (vnet ...) config read into a Vnet, and written back (xend_actors/device/vnets.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors import sxp
from xend_actors.device.vnets import parse_vnet_config, vnet_sxpr
from xend_actors.errors import BadRequest
from xend_actors.netscripts.vnet_spec import MAX_VNI, VXLAN_PORT, Vnet

EXAMPLES = Path(__file__).parents[1] / "data" / "reference-examples"


def parse(text: str) -> Vnet:
    return parse_vnet_config(sxp.parse(text))


def test_the_reference_example_parses() -> None:
    vnet = parse_vnet_config(sxp.parse((EXAMPLES / "vnet97.sxp").read_text()))
    assert vnet == Vnet(id=97, bridge="vnet97", vnetif="vnetif97", port=VXLAN_PORT)
    assert vnet.alias == "xend vnet 97"


def test_defaults_and_the_canonical_config() -> None:
    vnet = parse("(vnet (id 0042))")
    assert (vnet.id, vnet.bridge, vnet.vnetif, vnet.port) == (42, "vnet42", "vnetif42", 4789)
    assert (vnet.peers, vnet.group, vnet.dev, vnet.local) == ((), None, None, None)
    assert sxp.show(vnet_sxpr(vnet)) == \
        "(vnet (id 42) (bridge vnet42) (vnetif vnetif42) (security none) (port 4789))"


def test_every_field() -> None:
    vnet = parse("(vnet (id 7) (bridge br7) (vnetif vx7) (security none) (port 8472)"
                 " (peers 10.0.0.2 10.0.0.3) (peers 10.0.0.4 10.0.0.2) (group 239.1.1.7)"
                 " (dev eth0) (local 10.0.0.1))")
    assert vnet == Vnet(id=7, bridge="br7", vnetif="vx7", port=8472,
                        peers=("10.0.0.2", "10.0.0.3", "10.0.0.4"), group="239.1.1.7",
                        dev="eth0", local="10.0.0.1")
    assert sxp.show(vnet_sxpr(vnet)) == (
        "(vnet (id 7) (bridge br7) (vnetif vx7) (security none) (port 8472)"
        " (peers 10.0.0.2 10.0.0.3 10.0.0.4) (group 239.1.1.7) (dev eth0) (local 10.0.0.1))")


def test_ipv6_addresses_are_canonical() -> None:
    vnet = parse("(vnet (id 6) (peers 2001:DB8:0:0::2) (local 2001:db8::0001))")
    assert (vnet.peers, vnet.local) == (("2001:db8::2",), "2001:db8::1")
    assert parse("(vnet (id 6) (group ff05::6) (peers 2001:db8::2))").group == "ff05::6"


@pytest.mark.parametrize(("text", "message"), [
    ("(vm (id 1))", "vnet config: expected (vnet (id N) ...)"),
    ("vnet", "vnet config: expected (vnet (id N) ...)"),
    ("(vnet)", "vnet: missing id"),
    ("(vnet (bridge b))", "vnet: missing id"),
    ("(vnet (id 0))", "vnet: invalid id: 0 (a whole number from 1 to 16777215, the VXLAN VNI)"),
    (f"(vnet (id {MAX_VNI + 1}))", f"vnet: invalid id: {MAX_VNI + 1} (a whole number"),
    ("(vnet (id -3))", "vnet: invalid id: -3"),
    ("(vnet (id x))", "vnet: invalid id: x"),
    ("(vnet (id 12345678901))", "vnet: invalid id: 12345678901"),
    ("(vnet (id))", "vnet: invalid id: (id)"),
    ("(vnet (id 1 2))", "vnet: invalid id: (id 1 2)"),
    ("(vnet (id (1)))", "vnet: invalid id: (id (1))"),
    ("(vnet (id 1) (id 2))", "vnet: more than one (id ...)"),
    ("(vnet (id 1) (bridge a) (bridge b))", "vnet: more than one (bridge ...)"),
    ("(vnet (id 1) (name x))", "vnet: unknown field (name x)"),
    ("(vnet (id 1) stray)", "vnet: unknown field stray"),
    ("(vnet (id 1) (bridge a/b))", "vnet: invalid bridge name: a/b"),
    ("(vnet (id 1) (bridge 'a b'))", "vnet: invalid bridge name: a b"),
    ("(vnet (id 1) (bridge abcdefghijklmnop))", "vnet: invalid bridge name: abcdefghijklmnop"),
    ("(vnet (id 1) (bridge ..))", "vnet: invalid bridge name: .."),
    ("(vnet (id 1) (vnetif a:1))", "vnet: invalid vnetif name: a:1"),
    ("(vnet (id 1) (bridge x) (vnetif x))", "vnet: bridge and vnetif are both x"),
    ("(vnet (id 1) (security auth))", "vnet: security auth is not supported; only none"),
    ("(vnet (id 1) (security conf))", "vnet: security conf is not supported"),
    ("(vnet (id 1) (port 0))", "vnet: invalid port: 0"),
    ("(vnet (id 1) (port 65536))", "vnet: invalid port: 65536"),
    ("(vnet (id 1) (port http))", "vnet: invalid port: http"),
    ("(vnet (id 1) (peers nowhere))", "vnet: invalid peer address: nowhere"),
    ("(vnet (id 1) (peers 10.0.0.300))", "vnet: invalid peer address: 10.0.0.300"),
    ("(vnet (id 1) (peers (10.0.0.1)))", "vnet: invalid peer: (10.0.0.1)"),
    ("(vnet (id 1) (peers 239.1.1.1))", "vnet: peer 239.1.1.1 is not a unicast address"),
    ("(vnet (id 1) (peers 0.0.0.0))", "vnet: peer 0.0.0.0 is not a unicast address"),
    ("(vnet (id 1) (group 10.0.0.1))", "vnet: group 10.0.0.1 is not a multicast address"),
    ("(vnet (id 1) (group x))", "vnet: invalid group address: x"),
    ("(vnet (id 1) (local 224.0.0.1))", "vnet: local 224.0.0.1 is not a unicast address"),
    ("(vnet (id 1) (dev 'e 0'))", "vnet: invalid dev name: e 0"),
    ("(vnet (id 1) (peers 10.0.0.2 2001:db8::2))",
     "vnet: peers, group and local must all be IPv4 or all IPv6"),
    ("(vnet (id 1) (peers 10.0.0.2) (local 2001:db8::1))",
     "vnet: peers, group and local must all be IPv4 or all IPv6"),
    ("(vnet (id 1) (peers 2001:db8::2))",
     "vnet: IPv6 peers without a group need (local ADDRESS)"),
])
def test_bad_configs_say_why(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(text)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.status == 400


_names = st.from_regex(r"[a-z][a-z0-9_-]{0,14}", fullmatch=True)
_v4 = st.ip_addresses(v=4).filter(lambda a: not (a.is_multicast or a.is_unspecified))


@given(vnet_id=st.integers(1, MAX_VNI), bridge=_names, vnetif=_names,
       port=st.integers(1, 65535), peers=st.lists(_v4, max_size=4, unique=True),
       group=st.none() | st.ip_addresses(network="239.0.0.0/8"),
       dev=st.none() | _names, local=st.none() | _v4)
def test_the_canonical_config_reads_back_to_the_same_vnet(
        vnet_id: int, bridge: str, vnetif: str, port: int, peers: list, group: object,
        dev: str | None, local: object) -> None:
    if bridge == vnetif:
        vnetif = bridge[:14] + "x" if bridge[-1:] != "x" else bridge[:14] + "y"
    vnet = Vnet(id=vnet_id, bridge=bridge, vnetif=vnetif, port=port,
                peers=tuple(map(str, peers)), group=str(group) if group else None, dev=dev,
                local=str(local) if local else None)
    assert parse_vnet_config(sxp.parse(sxp.show(vnet_sxpr(vnet)))) == vnet
