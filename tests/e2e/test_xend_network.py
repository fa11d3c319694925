"""xend's networking for real, in a network namespace of the test's own: the network
script's bridge at start, a real tap ``vifD.N`` per vif in the sim's backend, the vif
script attaching it with anti-spoofing, frames the guest sends judged by that filter,
and every link gone with the domain. xend runs inside the namespace; the test reaches
it over its Unix socket."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.home import XendHome, new_home
from tests.support.netns import SIM_SHELL, netns_usable
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from xend_actors import sxp
from xend_actors.device.scripts import SHIPPED_SCRIPTS as SCRIPTS

_WHY = netns_usable()
pytestmark = [pytest.mark.e2e, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

LISTEN = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, _ = sock.recvfrom(2048)
    print(data.decode(), flush=True)
"""


class Namespace:
    def __init__(self) -> None:
        self.name = f"xn-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> str:
        done = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def links(self) -> dict[str, dict]:
        return {link["ifname"]: link for link in json.loads(self.ip("-j", "-d", "link", "show"))}

    def run(self, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                              text=True, timeout=60, **kwargs)  # type: ignore[call-overload]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace()
    yield ns
    ns.delete()


@pytest.fixture
def netns_xend(namespace: Namespace, reaper: Reaper) -> Iterator[XendHome]:
    home = new_home("(sim-taps yes)\n(vif-bridge xen-br0)\n")
    home.netns = namespace.name
    try:
        home.start()
        yield home
    finally:
        reaper.submit(str(home.root), home.tear_down)


def post(home: XendHome, path: str, **fields: str) -> sxp.Value:
    with home.unix_http() as http:
        reply = http.post(path, data=fields)
    assert reply.status_code in (200, 201), reply.text
    return sxp.parse(reply.text)


def vm(name: str, *vifs: list) -> str:
    return sxp.show(["vm", ["name", name], ["memory", "32"],
                     ["image", ["linux", ["kernel", "/boot/vmlinuz-sim"]]],
                     *(["device", vif] for vif in vifs)])


def test_vifs_are_real_links_on_the_bridge_and_go_with_the_domain(
        netns_xend: XendHome, namespace: Namespace) -> None:
    bridge = namespace.links()["xen-br0"]  # the network script ran when xend started
    assert bridge["linkinfo"]["info_kind"] == "bridge" and "UP" in bridge["flags"]
    info = post(netns_xend, "/xend/domain/", op="create", config=vm(
        "net1", ["vif", ["mac", "aa:00:00:00:01:01"], ["ip", "10.77.0.5"]],
        ["vif", ["mac", "aa:00:00:00:01:02"], ["vifname", "web0"]]))
    domid = sxp.child_value(info, "id")
    links = namespace.links()
    vif = links[f"vif{domid}.0"]
    assert vif["linkinfo"]["info_kind"] == "tun" and vif["master"] == "xen-br0"
    assert "UP" in vif["flags"]
    assert links["web0"]["master"] == "xen-br0"  # renamed to its vifname
    status = namespace.run(sys.executable, str(SCRIPTS / "vif-bridge"), "status",
                           f"vif=vif{domid}.0")
    assert "antispoof: on" in status.stdout, status.stdout + status.stderr

    post(netns_xend, "/xend/domain/net1", op="device_destroy", type="vif", idx="1")
    assert "web0" not in namespace.links()
    post(netns_xend, "/xend/domain/net1", op="destroy", reason="halt")
    links = namespace.links()
    assert f"vif{domid}.0" not in links
    assert "xen-br0" in links  # xend never takes the network down
    assert netns_xend.xend("stop").returncode == 0
    assert "xen-br0" in namespace.links()


def test_the_guest_may_send_from_its_own_address_only(
        netns_xend: XendHome, namespace: Namespace, tmp_path: Path) -> None:
    namespace.ip("addr", "add", "10.77.0.1/24", "dev", "xen-br0")
    listener = subprocess.Popen(
        ["ip", "netns", "exec", namespace.name, sys.executable, "-c", LISTEN, "10.77.0.1",
         "5000"], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
        info = post(netns_xend, "/xend/domain/", op="create", config=vm(
            "net2", ["vif", ["mac", "aa:00:00:00:02:01"], ["ip", "10.77.0.5"]]))
        post(netns_xend, "/xend/domain/net2", op="unpause")
        guest = Guest(netns_xend, namespace, int(sxp.child_value(info, "id")))
        guest.wait_connected()
        assert guest.sh("udp 0 10.77.0.66 10.77.0.1 5000 spoofed") == "sent"
        assert guest.sh("udp 0 10.77.0.5 10.77.0.1 5000 genuine") == "sent"
        assert listener.stdout.readline() == "genuine\n"  # the spoofed one never came
        status = namespace.run(sys.executable, str(SCRIPTS / "vif-bridge"), "status",
                               f"vif=vif{guest.domid}.0")
        drops = int(status.stdout.rsplit("drop=", 1)[1].split()[0])
        assert drops >= 1, status.stdout
    finally:
        listener.kill()
        listener.wait()


class Guest:
    """The sim guest's shell, reached through its console port inside the namespace."""

    def __init__(self, home: XendHome, namespace: Namespace, domid: int) -> None:
        self.home, self.namespace, self.domid = home, namespace, domid

    def wait_connected(self) -> None:
        def connected() -> bool:
            with self.home.unix_http() as http:
                vifs = sxp.parse(http.get("/xend/domain/net2", params={"op": "vifs"}).text)
            return bool(vifs) and sxp.child(vifs[0], "evtchn") is not None
        wait_for(connected, what="the vif connected")

    def sh(self, command: str) -> str:
        """Run ``command`` in the guest; the first word of its answer."""
        port = self.home.console_port_base + self.domid
        done = self.namespace.run(sys.executable, "-c", SIM_SHELL, str(port), command)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[0]




def test_the_network_script_takes_its_arguments_from_the_config(
        namespace: Namespace, reaper: Reaper) -> None:
    """``(network-script 'network netdev=nic0')``: the host's NIC (one end of a veth pair
    of the namespace's own) is put on the bridge with its address, as the original's
    default ``netdev=eth0`` did."""
    namespace.ip("link", "add", "nic0", "type", "veth", "peer", "name", "wire0")
    namespace.ip("addr", "add", "10.88.0.2/24", "dev", "nic0")
    namespace.ip("link", "set", "nic0", "up")
    home = new_home("(sim-taps yes)\n(vif-bridge xen-br0)\n"
                    "(network-script 'network netdev=nic0')\n")
    home.netns = namespace.name
    try:
        home.start()
        links = namespace.links()
        assert links["nic0"]["master"] == "xen-br0"
        addresses = json.loads(namespace.ip("-j", "addr", "show", "dev", "xen-br0"))
        assert "10.88.0.2" in [a["local"] for a in addresses[0]["addr_info"]]
    finally:
        reaper.submit(str(home.root), home.tear_down)


def test_a_vifs_counters_grow_when_the_guest_sends(namespace: Namespace,
                                                    reaper: Reaper) -> None:
    """The sim's backend counts what its guest sends on a vif; /metrics shows it."""
    from prometheus_client.parser import text_string_to_metric_families

    home = new_home("(sample-interval 0.5)\n(sim-taps yes)\n(vif-bridge xen-br0)\n")
    home.netns = namespace.name
    try:
        home.start()
        info = post(home, "/xend/domain/", op="create", config=vm(
            "net3", ["vif", ["mac", "aa:00:00:00:03:01"], ["ip", "10.77.0.7"]]))
        post(home, "/xend/domain/net3", op="unpause")
        domid = int(sxp.child_value(info, "id"))

        def sent() -> tuple[float, float]:
            with home.unix_http() as http:
                text = http.get("/metrics").text
            found = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.labels.get("domain") == "net3" and \
                            sample.labels.get("device") == "eth0":
                        found[sample.name] = sample.value
            return (found.get("xend_domain_vif_transmit_packets_total", -1),
                    found.get("xend_domain_vif_transmit_bytes_total", -1))

        wait_for(lambda: sent() == (0, 0), what="net3's vif in a sample")
        guest = Guest(home, namespace, domid)
        wait_for(lambda: guest.sh("udp 0 10.77.0.7 10.77.0.1 5000 counted") == "sent",
                 what="the guest to send")
        packets, sent_bytes = wait_for(lambda: (found := sent())[0] >= 1 and found,
                                       what="the sent frame to be counted")
        assert sent_bytes >= packets * (14 + 20 + 8 + len("counted"))  # ether, IP, UDP, data
    finally:
        reaper.submit(str(home.root), home.tear_down)
