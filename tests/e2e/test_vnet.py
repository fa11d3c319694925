"""Vnets for real: two namespaces as two hosts, joined by a vnet, pass their guests' traffic.

Each test makes its own network namespaces (``xv-<random>``) and deletes them after,
whatever happens; the vnet code runs inside a "host" namespace through ``ip netns exec
NS <python> -c ...``, exactly the functions xend's Vnets actor calls. A "guest" is one
more namespace with a veth whose other end is on the host's vnet bridge. Traffic is
UDP and TCP through Python sockets (this machine has no ping and no nc). No address
outside these namespaces is ever used.

Topology of ``two_hosts``::

    guest g1 (192.168.97.1) --veth-- [h1: bridge + vxlan] 10.77.0.1 ==veth== 10.77.0.2
                                     [h2: bridge + vxlan] --veth-- guest g2 (192.168.97.2)
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.netns import netns_usable

pytestmark = pytest.mark.e2e


_WHY = netns_usable()
if _WHY:
    pytestmark = [pytest.mark.e2e, pytest.mark.skip(reason=_WHY)]

# Runs the vnet code itself inside a namespace: VNET up|down '(vnet ...)'.
VNET = r"""
import sys
from pyroute2 import IPRoute
from xend_actors import sxp
from xend_actors.errors import XendError
from xend_actors.netscripts.vnet import vnet_down, vnet_up
from xend_actors.device.vnets import parse_vnet_config
try:
    vnet = parse_vnet_config(sxp.parse(sys.argv[2]))
    with IPRoute() as ipr:
        if sys.argv[1] == "up":
            vnet_up(ipr, vnet)
        else:
            print(" ".join(vnet_down(ipr, vnet)))
except XendError as error:
    print(f"{error.status} {error.message}", file=sys.stderr)
    sys.exit(1)
"""

# An echo server: UDP datagrams come back upper-cased; a TCP connection gets back all
# it sent, reversed, once it shuts down its sending side.
ECHO_SERVER = r"""
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
def udp():
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data.upper(), peer)
def tcp():
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen()
    while True:
        conn, _ = s.accept()
        with conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            conn.sendall(b"".join(chunks)[::-1])
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# UDP_PING host port seconds: send until a reply comes; print it, or nothing.
UDP_PING = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(0.25)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.sendto(b"hello over the vnet", (host, port))
    try:
        print(s.recv(65535).decode())
        break
    except (socket.timeout, ConnectionRefusedError):
        pass
"""

# TCP_BULK host port bytes: send that many bytes, print whether the reversed came back.
TCP_BULK = r"""
import os, socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(size)
with socket.create_connection((host, port), timeout=20) as s:
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
print("same" if b"".join(chunks) == data[::-1] else f"different {len(b''.join(chunks))}")
"""


class Netns:
    """One namespace of ours."""

    def __init__(self, role: str) -> None:
        self.name = f"xv-{role}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"ip -n {self.name} {' '.join(args)}: {done.stderr.strip()}")
        return done

    def ipj(self, *args: str) -> list:
        return json.loads(self.ip("-j", *args).stdout or "[]")

    def link(self, name: str) -> dict | None:
        found = [link for link in self.ipj("-d", "link", "show") if link["ifname"] == name]
        return found[0] if found else None

    def links(self) -> dict[str, dict]:
        """Every link by name, with the fields that matter here (not counters or timers)."""
        out = {}
        for link in self.ipj("-d", "link", "show"):
            info = link.get("linkinfo", {})
            out[link["ifname"]] = {"kind": info.get("info_kind"), "master": link.get("master"),
                                   "up": "UP" in link["flags"], "alias": link.get("ifalias")}
        return out

    def python(self, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code,
                               *args], capture_output=True, text=True, timeout=timeout)

    def vnet(self, op: str, config: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = self.python(VNET, op, config)
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def fdb_peers(self, dev: str) -> list[str]:
        out = subprocess.run(["bridge", "-n", self.name, "-j", "fdb", "show", "dev", dev],
                             capture_output=True, text=True, check=True).stdout
        return sorted(e["dst"] for e in json.loads(out or "[]")
                      if e.get("mac") == "00:00:00:00:00:00" and "dst" in e)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Namespaces:
    """Makes namespaces and deletes all of them, and stops what runs in them, at the end."""

    def __init__(self) -> None:
        self.made: list[Netns] = []
        self.processes: list[subprocess.Popen] = []

    def new(self, role: str) -> Netns:
        ns = Netns(role)
        self.made.append(ns)
        return ns

    def serve_echo(self, ns: Netns, host: str, port: int) -> None:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", ECHO_SERVER, host, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(server)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", server.stderr

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)
        for ns in self.made:
            ns.delete()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    try:
        yield made
    finally:
        made.close()


@dataclass
class Host:
    ns: Netns
    underlay: str  # this host's address on the wire between the hosts
    guest: Netns
    guest_ip: str
    guest_port: str  # the host's end of the guest's veth

    def plug_guest(self, bridge: str) -> None:
        """Put the guest's veth end on ``bridge`` (what the vif-bridge script does)."""
        self.ns.ip("link", "set", self.guest_port, "master", bridge)
        self.ns.ip("link", "set", self.guest_port, "up")


def two_hosts(namespaces: Namespaces, six: bool = False) -> tuple[Host, Host]:
    """Two host namespaces on one wire, each with a guest namespace beside it."""
    h1, h2 = namespaces.new("h1"), namespaces.new("h2")
    h1.ip("link", "add", "wire1", "type", "veth", "peer", "name", "wire2", "netns", h2.name)
    hosts = []
    for n, host in ((1, h1), (2, h2)):
        underlay = f"fd77::{n}" if six else f"10.77.0.{n}"
        host.ip("addr", "add", f"{underlay}/{64 if six else 24}", "dev", f"wire{n}",
                *(["nodad"] if six else []))
        host.ip("link", "set", f"wire{n}", "up")
        guest = namespaces.new(f"g{n}")
        guest.ip("link", "add", "eth0", "type", "veth", "peer", "name", f"vg{n}",
                 "netns", host.name)
        guest_ip = f"192.168.97.{n}"
        guest.ip("addr", "add", f"{guest_ip}/24", "dev", "eth0")
        guest.ip("link", "set", "eth0", "up")
        hosts.append(Host(host, underlay, guest, guest_ip, f"vg{n}"))
    return hosts[0], hosts[1]


def udp_reply(namespaces: Namespaces, src: Host, dst: Host, seconds: float = 10) -> str:
    """What ``src``'s guest got back from ``dst``'s guest's echo server ('' for nothing)."""
    if not getattr(dst, "serving", False):
        namespaces.serve_echo(dst.guest, dst.guest_ip, 5000)
        dst.serving = True  # type: ignore[attr-defined]
    done = src.guest.python(UDP_PING, dst.guest_ip, "5000", str(seconds))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def vnet_config(vnet_id: int, host: Host, other: Host, extra: str = "") -> str:
    return f"(vnet (id {vnet_id}) (peers {other.underlay}) (local {host.underlay}) {extra})"


# --- the tests ------------------------------------------------------------------------------


def test_two_hosts_joined_by_a_vnet_pass_traffic(namespaces: Namespaces) -> None:
    a, b = two_hosts(namespaces)
    for host, other in ((a, b), (b, a)):
        host.ns.vnet("up", vnet_config(97, host, other))
        host.plug_guest("vnet97")
    assert udp_reply(namespaces, a, b) == "HELLO OVER THE VNET"
    assert udp_reply(namespaces, b, a) == "HELLO OVER THE VNET"
    # A bulk TCP transfer both ways: frames of full size cross the tunnel too.
    done = a.guest.python(TCP_BULK, b.guest_ip, "5000", str(1 << 20))
    assert (done.returncode, done.stdout.strip()) == (0, "same"), done.stderr
    done = b.guest.python(TCP_BULK, a.guest_ip, "5000", str(1 << 20))
    assert (done.returncode, done.stdout.strip()) == (0, "same"), done.stderr

    # What the vnet made on each host: a bridge (STP off, up) and the VXLAN device in it.
    bridge = a.ns.link("vnet97")
    assert bridge is not None
    assert bridge["linkinfo"]["info_data"]["stp_state"] == 0
    assert bridge["ifalias"] == "xend vnet 97" and "UP" in bridge["flags"]
    vxlan = a.ns.link("vnetif97")
    assert vxlan is not None
    data = vxlan["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"]) == (97, 4789, "10.77.0.1")
    assert vxlan["master"] == "vnet97" and vxlan["ifalias"] == "xend vnet 97"
    assert a.ns.fdb_peers("vnetif97") == ["10.77.0.2"]


def test_only_the_same_vnet_id_connects(namespaces: Namespaces) -> None:
    a, b = two_hosts(namespaces)
    a.ns.vnet("up", vnet_config(10, a, b))
    a.plug_guest("vnet10")
    b.ns.vnet("up", vnet_config(11, b, a, "(bridge vnet10)"))  # another VNI on the same wire
    b.plug_guest("vnet10")
    assert udp_reply(namespaces, a, b, seconds=3) == ""
    b.ns.vnet("down", vnet_config(11, b, a, "(bridge vnet10)"))
    assert b.ns.link("vnet10") is None  # the guest's port went with the bridge
    b.ns.vnet("up", vnet_config(10, b, a))
    b.plug_guest("vnet10")
    assert udp_reply(namespaces, a, b) == "HELLO OVER THE VNET"


def test_a_multicast_group_finds_the_peers(namespaces: Namespaces) -> None:
    a, b = two_hosts(namespaces)
    for n, host in ((1, a), (2, b)):
        host.ns.vnet("up", f"(vnet (id 200) (group 239.1.77.200) (dev wire{n}))")
        host.plug_guest("vnet200")
    assert udp_reply(namespaces, a, b) == "HELLO OVER THE VNET"
    data = a.ns.link("vnetif200")["linkinfo"]["info_data"]  # type: ignore[index]
    assert (data["group"], data["link"]) == ("239.1.77.200", "wire1")


def test_ipv6_underlay(namespaces: Namespaces) -> None:
    a, b = two_hosts(namespaces, six=True)
    for host, other in ((a, b), (b, a)):
        host.ns.vnet("up", vnet_config(66, host, other))
        host.plug_guest("vnet66")
    assert udp_reply(namespaces, a, b) == "HELLO OVER THE VNET"
    assert a.ns.fdb_peers("vnetif66") == ["fd77::2"]


def test_down_removes_exactly_what_up_made(namespaces: Namespaces) -> None:
    ns = namespaces.new("h")
    ns.ip("link", "add", "eth9", "type", "veth", "peer", "name", "p-eth9")
    before = ns.links()
    config = "(vnet (id 5) (peers 10.0.0.2) (dev eth9))"
    ns.vnet("up", config)
    ns.vnet("up", config)  # again: nothing changes, nothing fails
    links = ns.links()
    assert links["vnet5"] == {"kind": "bridge", "master": None, "up": True,
                              "alias": "xend vnet 5"}
    assert links["vnetif5"] == {"kind": "vxlan", "master": "vnet5", "up": True,
                                "alias": "xend vnet 5"}
    assert ns.fdb_peers("vnetif5") == ["10.0.0.2"]
    assert ns.vnet("down", config).stdout.strip() == ""
    assert ns.links() == before
    ns.vnet("down", config)  # again: already gone
    assert ns.links() == before


def test_a_bridge_that_was_there_is_used_and_kept(namespaces: Namespaces) -> None:
    ns = namespaces.new("h")
    ns.ip("link", "add", "xen-br0", "type", "bridge")
    ns.ip("link", "add", "vif1.0", "type", "veth", "peer", "name", "p-vif1.0")
    ns.ip("link", "set", "vif1.0", "master", "xen-br0")
    before = ns.links()
    config = "(vnet (id 6) (bridge xen-br0))"
    ns.vnet("up", config)
    assert ns.links()["vnetif6"]["master"] == "xen-br0"
    assert ns.links()["xen-br0"]["alias"] is None
    assert ns.vnet("down", config).stdout.strip() == ""  # the bridge stays: nothing detached
    after = ns.links()
    assert after["xen-br0"]["up"]  # brought up by the vnet, left up
    after["xen-br0"]["up"] = before["xen-br0"]["up"]
    assert after == before


def test_deleting_a_bridge_tells_which_ports_were_left(namespaces: Namespaces) -> None:
    ns = namespaces.new("h")
    ns.vnet("up", "(vnet (id 8))")
    ns.ip("link", "add", "vif2.0", "type", "veth", "peer", "name", "p-vif2.0")
    ns.ip("link", "set", "vif2.0", "master", "vnet8")
    assert ns.vnet("down", "(vnet (id 8))").stdout.strip() == "vif2.0"
    assert ns.links()["vif2.0"]["master"] is None


def test_links_that_are_not_the_vnets_are_conflicts(namespaces: Namespaces) -> None:
    ns = namespaces.new("h")
    ns.ip("link", "add", "vnet3", "type", "veth", "peer", "name", "p-vnet3")
    before = ns.links()
    done = ns.vnet("up", "(vnet (id 3))", ok=False)
    assert done.stderr.strip() == "409 vnet 3: vnet3 exists and is not a bridge"
    assert ns.links() == before
    # The VXLAN device's name is taken: the bridge this call made is deleted again.
    done = ns.vnet("up", "(vnet (id 3) (bridge br3) (vnetif vnet3))", ok=False)
    assert done.stderr.strip() == \
        "409 vnet 3: network device vnet3 exists and was not made for this vnet"
    assert ns.links() == before
    # Another vnet's bridge is not shared.
    ns.vnet("up", "(vnet (id 4) (bridge br4))")
    done = ns.vnet("up", "(vnet (id 5) (bridge br4))", ok=False)
    assert done.stderr.strip() == "409 vnet 5: bridge br4 belongs to vnet 4"
    # The kernel refuses a second VXLAN device with the same VNI and port.
    done = ns.vnet("up", "(vnet (id 4) (bridge br44) (vnetif vx44))", ok=False)
    assert done.stderr.strip().startswith("409 vnet 4: cannot create VXLAN device vx44: ")
    assert "br44" not in ns.links()
    # A dev that is not there is bad input.
    done = ns.vnet("up", "(vnet (id 9) (dev eth7))", ok=False)
    assert done.stderr.strip() == "400 vnet 9: no network device eth7 (its dev)"
    assert "vnet9" not in ns.links()


def test_up_again_makes_the_vxlan_device_fit_the_config(namespaces: Namespaces) -> None:
    ns = namespaces.new("h")
    ns.vnet("up", "(vnet (id 12) (peers 10.0.0.2 10.0.0.3))")
    ns.vnet("up", "(vnet (id 12) (peers 10.0.0.3 10.0.0.4))")
    assert ns.fdb_peers("vnetif12") == ["10.0.0.3", "10.0.0.4"]
    ns.vnet("up", "(vnet (id 12) (port 8472) (peers 10.0.0.4))")
    data = ns.link("vnetif12")["linkinfo"]["info_data"]  # type: ignore[index]
    assert data["port"] == 8472
    assert ns.fdb_peers("vnetif12") == ["10.0.0.4"]
    assert ns.links()["vnetif12"]["master"] == "vnet12"


def test_a_deleted_link_comes_back(namespaces: Namespaces) -> None:
    ns = namespaces.new("h")
    config = "(vnet (id 13) (peers 10.0.0.2))"
    ns.vnet("up", config)
    ns.ip("link", "del", "vnetif13")
    ns.vnet("up", config)
    assert ns.links()["vnetif13"]["master"] == "vnet13"
    assert ns.fdb_peers("vnetif13") == ["10.0.0.2"]
    ns.vnet("down", config)
    assert "vnet13" not in ns.links()
