"""The ``network`` and ``vif-bridge`` scripts, run for real inside throw-away namespaces.

Every test makes its own network namespaces (``xt-<random>``) and deletes them afterwards;
the scripts run inside them through ``ip netns exec NS <python> netscripts/...``, so the
host's own network is never touched.  Only addresses inside these namespaces are used.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.netns import netns_usable
from tests.support.processes import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "netscripts"


_WHY = netns_usable()
if _WHY:
    pytestmark = [pytest.mark.e2e, pytest.mark.skip(reason=_WHY)]

# A ping: raw ICMP (or ICMPv6) echo in Python (this machine has no ping binary).  Prints
# the replies it got.
PING = r"""
import os, socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
v6 = ":" in dst
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
if v6:  # the kernel fills in an ICMPv6 checksum, and gives replies without the IP header
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    request, reply = 128, 129
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    request, reply = 8, 0
ident, got = os.getpid() & 0xFFFF, 0
for seq in range(count):
    payload = b"xend-netscripts!"
    head = struct.pack("!BBHHH", request, 0, 0, ident, seq)
    check = 0 if v6 else csum(head + payload)
    sock.sendto(struct.pack("!BBHHH", request, 0, check, ident, seq) + payload, (dst, 0))
    end = time.monotonic() + 0.6
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except socket.timeout:
            break
        ihl = 0 if v6 else (data[0] & 15) * 4
        kind, _c, _s, i, sq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == reply and i == ident and sq == seq:
            got += 1
            break
print(got)
"""


class Netns:
    """One namespace of ours, with helpers to run things inside it."""

    def __init__(self, state_dir: Path) -> None:
        self.name = f"xt-{secrets.token_hex(4)}"
        self.state_dir = state_dir
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return done

    def ipj(self, *args: str) -> list:
        return json.loads(self.ip("-j", *args).stdout or "[]")

    def script(self, name: str, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, XEND_RUN_DIR=str(self.state_dir))
        return subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, str(SCRIPTS / name), *args],
            capture_output=True, text=True, env=env, timeout=60)

    def ping(self, dst: str, count: int = 3) -> int:
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", PING, dst, str(count)],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    def link(self, name: str) -> dict | None:
        links = [lk for lk in self.ipj("-d", "link", "show") if lk["ifname"] == name]
        return links[0] if links else None

    def snapshot(self) -> dict:
        """Links, addresses and routes, without what changes by itself (DAD, lifetimes),
        once the kernel has settled: no IPv6 address is still in duplicate address
        detection (the kernel adds its routes when that ends, later on a busy machine) and
        two looks in a row agree."""
        def settled() -> dict | None:
            if any(entry.get("addr_info") for entry in self.ipj("-6", "addr", "show",
                                                                  "tentative")):
                return None
            first, second = self._look(), self._look()
            return first if first == second else None
        return wait_for(settled, timeout=20, what=f"the network of {self.name} to settle")

    def _look(self) -> dict:
        links = self.ipj("-d", "link", "show")
        for link in links:  # a bridge's timers run by themselves
            data = link.get("linkinfo", {}).get("info_data", {})
            for key in [k for k in data if k.endswith("_timer")]:
                del data[key]
        addrs = self.ipj("addr", "show")
        for entry in addrs:
            for info in entry.get("addr_info", []):
                info.pop("tentative", None)
                info.pop("valid_life_time", None)
                info.pop("preferred_life_time", None)
        routes = self.ipj("route", "show", "table", "all")
        routes6 = self.ipj("-6", "route", "show", "table", "all")
        return {"links": links, "addrs": addrs, "routes": routes, "routes6": routes6}

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Callable[[], Netns]]:
    made: list[Netns] = []

    def make() -> Netns:
        ns = Netns(tmp_path / f"run{len(made)}")
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.delete()


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _with_netdev(ns: Netns) -> None:
    """eth9 (a veth) with addresses and routes, as a host's uplink would have."""
    ns.ip("link", "add", "eth9", "type", "veth", "peer", "name", "eth9p")
    ns.ip("link", "set", "eth9", "up")
    ns.ip("link", "set", "eth9p", "up")
    ns.ip("addr", "add", "10.5.0.2/24", "dev", "eth9")
    ns.ip("addr", "add", "10.5.0.3/24", "dev", "eth9")  # a secondary
    ns.ip("-6", "addr", "add", "fd00:5::2/64", "dev", "eth9", "nodad")
    ns.ip("route", "add", "default", "via", "10.5.0.1")
    ns.ip("route", "add", "10.6.0.0/16", "via", "10.5.0.254", "metric", "5")
    ns.ip("-6", "route", "add", "fd00:6::/64", "via", "fd00:5::1")


# --- network ----------------------------------------------------------------------------


def test_start_moves_netdev_and_stop_restores_everything(netns: Callable[[], Netns]) -> None:
    ns = netns()
    _with_netdev(ns)
    before = ns.snapshot()

    done = ns.script("network", "start", "bridge='xen-br0'", "netdev=eth9", "antispoof=yes")
    assert done.returncode == 0, done.stderr
    br = ns.link("xen-br0")
    assert br is not None and br["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in br["flags"]
    data = br["linkinfo"]["info_data"]
    assert data["stp_state"] == 0 and data["forward_delay"] == 0
    assert ns.link("eth9")["master"] == "xen-br0"
    on_bridge = {a["local"] for e in ns.ipj("addr", "show", "dev", "xen-br0")
                 for a in e["addr_info"]}
    assert {"10.5.0.2", "10.5.0.3", "fd00:5::2"} <= on_bridge
    assert not [a for e in ns.ipj("addr", "show", "dev", "eth9") for a in e["addr_info"]
                if a["family"] == "inet" or a["local"].startswith("fd00")]
    routes = {r["dst"]: r for r in ns.ipj("route", "show")}
    assert routes["default"]["dev"] == "xen-br0" and routes["default"]["gateway"] == "10.5.0.1"
    assert routes["10.6.0.0/16"]["dev"] == "xen-br0" and routes["10.6.0.0/16"]["metric"] == 5
    routes6 = {r["dst"]: r for r in ns.ipj("-6", "route", "show")}
    assert routes6["fd00:6::/64"]["dev"] == "xen-br0"
    assert (ns.state_dir / "network-xen-br0.json").exists()

    done = ns.script("network", "stop", "bridge=xen-br0")
    assert done.returncode == 0, done.stderr
    assert ns.snapshot() == before
    assert not (ns.state_dir / "network-xen-br0.json").exists()


def test_start_is_idempotent_and_status_tells(netns: Callable[[], Netns]) -> None:
    ns = netns()
    done = ns.script("network", "status")
    assert done.returncode == 3 and "absent" in done.stdout
    before = ns.snapshot()

    assert ns.script("network", "start").returncode == 0  # default bridge xen-br0, no netdev
    state = (ns.state_dir / "network-xen-br0.json").read_text()
    once = ns.snapshot()
    again = ns.script("network", "start")
    assert again.returncode == 0, again.stderr
    assert ns.snapshot() == once
    assert (ns.state_dir / "network-xen-br0.json").read_text() == state

    done = ns.script("network", "status", "bridge=xen-br0")
    assert done.returncode == 0, done.stderr
    assert "bridge xen-br0: up" in done.stdout and "ports: -" in done.stdout

    assert ns.script("network", "stop").returncode == 0
    assert ns.script("network", "status").returncode == 3
    assert ns.snapshot() == before
    assert ns.script("network", "stop").returncode == 0  # nothing left to undo


def test_a_bridge_set_up_beforehand_is_left_alone(netns: Callable[[], Netns]) -> None:
    ns = netns()
    ns.ip("link", "add", "br7", "type", "bridge")
    ns.ip("link", "set", "br7", "up")
    before = ns.snapshot()
    assert ns.script("network", "start", "bridge=br7").returncode == 0
    assert ns.snapshot() == before
    assert ns.script("network", "stop", "bridge=br7").returncode == 0
    assert ns.link("br7") is not None  # not ours to delete


def test_bridge_null_does_nothing(netns: Callable[[], Netns]) -> None:
    ns = netns()
    before = ns.snapshot()
    for op in ("start", "status", "stop"):
        assert ns.script("network", op, "bridge=null").returncode == 0
    assert ns.script("vif-bridge", "up", "vif=vif1.0", "domain=d", "mac=00:16:3e:00:00:01",
                     "bridge=null").returncode == 0
    assert ns.snapshot() == before


def test_failures_are_one_line(netns: Callable[[], Netns]) -> None:
    ns = netns()
    assert "unknown argument" in _one_line_error(ns.script("network", "start", "bogus=1"))
    assert "usage" in _one_line_error(ns.script("network", "restart"))
    assert "eth42" in _one_line_error(ns.script("network", "start", "bridge=br1",
                                                 "netdev=eth42"))
    assert ns.link("br1") is None  # the failed start was rolled back
    assert ns.script("network", "status", "bridge=br1").returncode == 3
    args = ["domain=d", "mac=00:16:3e:00:00:01", "bridge=xen-br0"]
    assert "vif1.0" in _one_line_error(ns.script("vif-bridge", "up", "vif=vif1.0", *args))
    assert "mac" in _one_line_error(ns.script("vif-bridge", "up", "vif=vif1.0", "domain=d",
                                              "bridge=xen-br0"))
    ns.ip("link", "add", "vif1.0", "type", "veth", "peer", "name", "vifp")
    assert "xen-br0" in _one_line_error(ns.script("vif-bridge", "up", "vif=vif1.0", *args))
    assert "IPv4" in _one_line_error(ns.script("vif-bridge", "up", "vif=vif1.0", *args,
                                               "ip=10.0.0.300"))


# --- vif-bridge and anti-spoofing -------------------------------------------------------


def _host_and_guest(netns: Callable[[], Netns]) -> tuple[Netns, Netns, str]:
    """Host namespace with xen-br0 (10.99.0.1/24) and vif1.0, whose peer is the guest's eth0."""
    host, guest = netns(), netns()
    done = host.script("network", "start")
    assert done.returncode == 0, done.stderr
    host.ip("addr", "add", "10.99.0.1/24", "dev", "xen-br0")
    host.ip("link", "add", "vif1.0", "type", "veth", "peer", "name", "eth0",
            "netns", guest.name)
    guest.ip("link", "set", "eth0", "up")
    guest.ip("addr", "add", "10.99.0.2/24", "dev", "eth0")
    mac = guest.link("eth0")["address"]
    return host, guest, mac


TC_SHOW = r"""
import json, sys
from pyroute2 import IPRoute
with IPRoute() as ipr:
    idx = ipr.link_lookup(ifname=sys.argv[1])[0]
    print(json.dumps({
        "qdiscs": [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=idx)],
        "filters": [f.get_attr("TCA_KIND") for f in ipr.get_filters(index=idx,
                                                                    parent=0xFFFF0000)]}))
"""


def _tc(ns: Netns, dev: str) -> dict:
    """The device's qdisc and ingress filter kinds, read with pyroute2 (there's no tc here)."""
    done = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c", TC_SHOW, dev],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _qdiscs(ns: Netns, dev: str) -> list[str]:
    return _tc(ns, dev)["qdiscs"]


def _drops(host: Netns) -> int:
    done = host.script("vif-bridge", "status", "vif=vif1.0")
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("antispoof:"))
    return int(line.rsplit("drop=", 1)[1])


def test_antispoofing_drops_other_sources(netns: Callable[[], Netns]) -> None:
    host, guest, mac = _host_and_guest(netns)
    up = ["up", "vif='vif1.0'", "domain='guest1'", f"mac='{mac}'", "bridge='xen-br0'",
          "ip='10.99.0.2'"]
    done = host.script("vif-bridge", *up)
    assert done.returncode == 0, done.stderr
    assert host.link("vif1.0")["master"] == "xen-br0"
    assert "ingress" in _qdiscs(host, "vif1.0")
    assert "bpf" in _tc(host, "vif1.0")["filters"]
    assert host.script("vif-bridge", *up).returncode == 0  # idempotent

    assert guest.ping("10.99.0.1") >= 2
    assert _drops(host) == 0

    guest.ip("addr", "del", "10.99.0.2/24", "dev", "eth0")
    guest.ip("addr", "add", "10.99.0.77/24", "dev", "eth0")
    assert guest.ping("10.99.0.1") == 0
    assert _drops(host) > 0

    guest.ip("addr", "del", "10.99.0.77/24", "dev", "eth0")
    guest.ip("addr", "add", "10.99.0.2/24", "dev", "eth0")
    assert guest.ping("10.99.0.1") >= 2

    done = host.script("vif-bridge", "down", *up[1:])
    assert done.returncode == 0, done.stderr
    assert "ingress" not in _qdiscs(host, "vif1.0")
    assert _tc(host, "vif1.0")["filters"] == []
    vif = host.link("vif1.0")
    assert "master" not in vif and "UP" not in vif["flags"]
    assert host.script("vif-bridge", "down", *up[1:]).returncode == 0  # idempotent
    host.ip("link", "del", "vif1.0")
    assert host.script("vif-bridge", "down", *up[1:]).returncode == 0  # gone: fine


def test_antispoofing_covers_ipv6_and_the_mac(netns: Callable[[], Netns]) -> None:
    host, guest, mac = _host_and_guest(netns)
    host.ip("addr", "add", "fd00:99::1/64", "dev", "xen-br0", "nodad")
    guest.ip("addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad")
    done = host.script("vif-bridge", "up", "vif=vif1.0", "domain=guest1", f"mac={mac}",
                       "bridge=xen-br0", "ip=10.99.0.2 fd00:99::2")
    assert done.returncode == 0, done.stderr
    assert guest.ping("fd00:99::1") >= 2
    assert guest.ping("10.99.0.1") >= 2
    assert _drops(host) == 0

    guest.ip("addr", "del", "fd00:99::2/64", "dev", "eth0")
    guest.ip("addr", "add", "fd00:99::77/64", "dev", "eth0", "nodad")
    assert guest.ping("fd00:99::1") == 0
    dropped = _drops(host)
    assert dropped > 0
    guest.ip("addr", "del", "fd00:99::77/64", "dev", "eth0")
    guest.ip("addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad")
    assert guest.ping("fd00:99::1") >= 2

    guest.ip("link", "set", "eth0", "address", "00:16:3e:00:00:99")  # another's MAC
    assert guest.ping("10.99.0.1") == 0
    assert _drops(host) > dropped
    guest.ip("link", "set", "eth0", "address", mac)
    assert guest.ping("10.99.0.1") >= 2


def test_nets_and_antispoof_off(netns: Callable[[], Netns]) -> None:
    host, guest, mac = _host_and_guest(netns)
    base = ["vif=vif1.0", "domain=guest1", f"mac={mac}", "bridge=xen-br0"]
    guest.ip("addr", "del", "10.99.0.2/24", "dev", "eth0")
    guest.ip("addr", "add", "10.99.0.77/24", "dev", "eth0")

    assert host.script("vif-bridge", "up", *base, "ip=10.99.0.2 10.99.0.64/26").returncode == 0
    assert guest.ping("10.99.0.1") >= 2  # .77 lies in .64/26

    assert host.script("vif-bridge", "up", *base, "ip=10.99.0.2 10.99.0.5").returncode == 0
    assert guest.ping("10.99.0.1") == 0

    done = host.script("vif-bridge", "up", *base, "ip=10.99.0.2", "antispoof=no")
    assert done.returncode == 0, done.stderr
    assert "ingress" not in _qdiscs(host, "vif1.0")
    assert guest.ping("10.99.0.1") >= 2

    assert host.script("vif-bridge", "up", *base).returncode == 0  # no ip=: no filter
    assert "ingress" not in _qdiscs(host, "vif1.0")
    assert guest.ping("10.99.0.1") >= 2
