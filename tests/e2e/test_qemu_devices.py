"""Devices of real guests under qemu through a real xend: a hot-added vbd is the guest's
/dev/vdX, its data outlives a restart of the domain, mode r is read-only; vifs are taps on
the bridge, two guests ping each other, a guest that takes another address is cut off, and
a paused guest's vif is refused (409) and kept, tap and all, until the guest runs; a
hot-plug or a destroy cut off by a kill -9 of xend is undone or finished by the next xend.

The network test runs xend (and so its qemus and their taps) in a network namespace of
its own and reaches the consoles from inside it.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.qemu import (
    BOOT_TIMEOUT,
    MEMORY,
    QEMU,
    QEMU_CONFIG,
    Guest,
    QemuXend,
    booted,
    console,
    process_gone,
    vm,
)
from tests.support.holding import Holder
from tests.support.home import XendHome, new_home
from tests.support.netns import netns_usable
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from xend_actors import sxp
from xend_actors.device.vbd import vdevice
from xend_actors.hypervisor.qemu.qmp import Qmp

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(QEMU is None,
                                 reason="qemu-system-x86_64 is not installed")]


def image(folder: Path, name: str, size: int = 8 << 20) -> Path:
    path = folder / name
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def vbd(path: Path, dev: str, mode: str) -> str:
    return sxp.show(["vbd", ["uname", f"file:{path}"], ["dev", dev], ["mode", mode]])


def restarted(xend: QemuXend, name: str, domid: int) -> None:
    xend.wait_event(f"xend.domain.restart ({name} {domid} success)", BOOT_TIMEOUT)


def test_a_hot_added_vbd_is_a_disk_whose_data_survives_a_restart(
        qemu: QemuXend, tmp_path: Path) -> None:
    xend = qemu
    disk, cdrom = image(tmp_path, "disk.img"), image(tmp_path, "ro.img")
    domid = int(sxp.child_value(xend.create_vm("qd"), "id"))
    with console(xend.console_port("qd")) as con:
        booted(con)
        reply = xend.op("qd", "device_create", config=vbd(disk, "sda1", "w"))
        assert reply.status_code == 200, reply.text
        assert sxp.child_value(sxp.parse(reply.text), "idx") == "0"
        con.run("until [ -b /dev/vda ]; do sleep 0.2; done; echo HAVE-$((1))-VDA",
                rb"HAVE-1-VDA", 30)
        con.run("printf survives-a-restart | dd of=/dev/vda conv=fsync 2>/dev/null;"
                " echo WROTE-$((2))", rb"WROTE-2")
        assert disk.read_bytes()[:18] == b"survives-a-restart"

        reply = xend.op("qd", "device_create", config=vbd(cdrom, "sdb", "r"))
        assert reply.status_code == 200, reply.text
        con.run("until [ -b /dev/vdb ]; do sleep 0.2; done; echo RO-$(cat /sys/block/vdb/ro)-",
                rb"RO-1-", 30)
        con.run("printf x | dd of=/dev/vdb conv=fsync 2>/dev/null || echo REFUSED-$((3))",
                rb"REFUSED-3")
        assert cdrom.read_bytes()[:1] == b"\0"

        assert xend.op("qd", "device_destroy", type="vbd", idx="1").status_code == 200
        con.run("while [ -b /dev/vdb ]; do sleep 0.2; done; echo GONE-$((4))", rb"GONE-4", 30)

        xend.do("qd", "shutdown", reason="reboot")
        restarted(xend, "qd", domid)
        booted(con)  # the same console connection sees the new boot
        con.run("dd if=/dev/vda bs=18 count=1 2>/dev/null; echo; echo READ-$((5))",
                rb"survives-a-restart\s+READ-5")
    vbds = sxp.parse(xend.http.get("/xend/domain/qd", params={"op": "vbds"}).text)
    assert [sxp.child_value(v, "dev") for v in vbds] == ["sda1"]


def test_a_xend_killed_and_started_again_still_unplugs_what_it_plugged(
        qemu_xend: Callable[..., QemuXend], tmp_path: Path) -> None:
    xend = qemu_xend()  # of its own: it is killed
    disk = image(tmp_path, "disk.img")
    xend.create_vm("qk", ["device", ["vbd", ["uname", f"file:{disk}"], ["dev", "sda1"],
                                  ["mode", "w"]]])
    with console(xend.console_port("qk")) as con:
        booted(con)
    xend.home.kill9()
    assert xend.home.xend("status").returncode != 0
    xend.start()
    with console(xend.console_port("qk")) as con:
        con.run("[ -b /dev/vda ] && echo HAVE-$((1))", rb"HAVE-1")
        reply = xend.op("qk", "device_destroy", type="vbd", idx="0")
        assert reply.status_code == 200, reply.text
        con.run("while [ -b /dev/vda ]; do sleep 0.2; done; echo GONE-$((2))", rb"GONE-2", 30)


def test_a_disk_node_a_killed_xend_left_without_its_device_is_dropped_at_the_next_start(
        qemu_xend: Callable[..., QemuXend], tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: xend killed between qemu's blockdev-add and its
    # device_add; the node stayed, and every later plug of that vbd was refused.
    xend = qemu_xend()  # of its own: it is killed
    disk = image(tmp_path, "disk.img")
    domid = int(sxp.child_value(xend.create_vm("qn"), "id"))
    with console(xend.console_port("qn")) as con:
        booted(con)
    xend.home.kill9()
    monitor = Qmp.connect(xend.home.run_dir / "qemu" / str(domid) / "qmp.sock")
    try:  # what the killed xend got to
        monitor.execute("blockdev-add", {"driver": "raw", "node-name": f"vbd-{vdevice('sda1')}",
                                         "file": {"driver": "file", "filename": str(disk)}})
    finally:
        monitor.close()
    xend.start()
    reply = xend.op("qn", "device_create", config=vbd(disk, "sda1", "w"))
    assert reply.status_code == 200, reply.text
    assert f"deleting disk node vbd-{vdevice('sda1')}, which a stopped xend was plugging" in \
        xend.home.logfile.read_text()
    with console(xend.console_port("qn")) as con:
        con.run("until [ -b /dev/vda ]; do sleep 0.2; done; echo HAVE-$((1))-VDA",
                rb"HAVE-1-VDA", 30)


def test_a_guest_slow_to_let_go_of_a_disk_holds_up_no_other_domain(
        qemu: QemuXend, tmp_path: Path) -> None:
    # A guest without ACPI PCI hotplug never answers the unplug of its disk, so xend
    # waits for it (up to its timeout); a hot-plug into another domain meanwhile goes ahead.
    xend = qemu
    qs = sxp.child_value(xend.create_vm(
        "qs", ["device", sxp.parse(vbd(image(tmp_path, "slow.img"), "sda1", "w"))],
        args="acpiphp.disable=1"), "id")
    xend.create_vm("qq")
    for name in ("qs", "qq"):
        with console(xend.console_port(name)) as con:
            booted(con)
    slow: list[httpx.Response] = []
    unplugging = threading.Thread(target=lambda: slow.append(
        xend.op("qs", "device_destroy", type="vbd", idx="0")))
    unplugging.start()
    try:
        wait_for(lambda: f"Domain {qs}: unplugging vbd-" in xend.home.logfile.read_text(),
                 what="the slow unplug under way")
        reply = xend.op("qq", "device_create", config=vbd(image(tmp_path, "quick.img"),
                                                           "sda1", "w"))
        assert reply.status_code == 200, reply.text
        assert unplugging.is_alive(), "the deaf guest's unplug ended first"
        with console(xend.console_port("qq")) as con:
            con.run("until [ -b /dev/vda ]; do sleep 0.2; done; echo HAVE-$((1))", rb"HAVE-1", 30)
    finally:
        unplugging.join(60)
    assert slow and slow[0].status_code == 500, slow
    assert "vbd sda1" in slow[0].text
    # Destroyed, its devices go with it: nobody waits for the guest to let go.
    assert xend.op("qs", "destroy", reason="halt").status_code == 200
    assert "qs" not in xend.names()


def test_a_paused_guest_s_disk_is_refused_at_once_and_the_domain_destroyed_at_once(
        qemu: QemuXend, tmp_path: Path) -> None:
    xend = qemu
    xend.create_vm("qp", ["device", sxp.parse(vbd(image(tmp_path, "disk.img"), "sda1", "w"))])
    with console(xend.console_port("qp")) as con:
        booted(con)
    xend.do("qp", "pause")
    reply = xend.op("qp", "device_destroy", type="vbd", idx="0")
    assert reply.status_code == 409, reply.text
    assert "is paused: its guest can let go of a device only while it runs; unpause it " \
           "first" in sxp.parse(reply.text)[1]
    vbds = sxp.parse(xend.http.get("/xend/domain/qp", params={"op": "vbds"}).text)
    assert [sxp.child_value(v, "dev") for v in vbds] == ["sda1"]
    with console(xend.console_port("qp")) as con:  # the guest still has it
        xend.do("qp", "unpause")
        con.run("[ -b /dev/vda ] && echo HAVE-$((1))", rb"HAVE-1")
    xend.do("qp", "pause")
    reply = xend.op("qp", "destroy", reason="halt")
    assert reply.status_code == 200, reply.text
    assert xend.names() == ["Domain-0"]
    assert not list((xend.home.run_dir / "qemu").glob("*/state.json"))


def test_a_vbd_that_cannot_be_attached_leaves_no_domain(
        qemu: QemuXend, tmp_path: Path) -> None:
    xend = qemu
    empty = tmp_path / "empty.img"
    empty.touch()
    reply = xend.http.post("/xend/domain/", data={"op": "create", "config": sxp.show(
        ["vm", ["name", "qe"], ["memory", MEMORY],
         ["image", ["linux", ["kernel", xend.guest.kernel], ["ramdisk", xend.guest.ramdisk]]],
         ["device", ["vbd", ["uname", f"file:{empty}"], ["dev", "sda1"], ["mode", "w"]]]])})
    assert reply.status_code == 500
    assert "Extent not found for VBD" in sxp.parse(reply.text)[1]
    assert xend.names() == ["Domain-0"]
    assert not list((xend.home.run_dir / "qemu").glob("*/state.json"))


# --- two guests on a bridge, in a namespace of the test's own --------------------------------

CONSOLE = r"""
import re, socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
deadline = time.monotonic() + float(sys.argv[4])

def expect(pattern, nudge=None):
    # Typing before the shell reads its terminal loses characters (the boot eats them),
    # so the prompt is awaited first, nudged with a newline every few seconds.
    seen, nudged = b"", 0.0
    while not (match := re.search(pattern, seen)):
        now = time.monotonic()
        if now >= deadline:
            sys.exit(f"no {pattern!r} in {seen[-1500:]!r}")
        if nudge is not None and now - nudged > 3:
            sock.sendall(nudge)
            nudged = now
        sock.settimeout(min(deadline - now, 1.0))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        if not data:
            sys.exit(f"console closed: {seen[-1500:]!r}")
        seen += data
    return match

expect(rb"\]# ", nudge=b"\n")
sock.sendall(sys.argv[2].encode() + b"\n")
print(expect(sys.argv[3].encode()).group(0).decode())
"""


class Host:
    """A xend with the qemu driver inside a network namespace."""

    def __init__(self, guest: Guest) -> None:
        self.ns = f"xq-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.guest = guest
        self.home: XendHome = new_home(QEMU_CONFIG + "(vif-bridge xen-br0)\n")
        self.home.netns = self.ns
        self.xend = QemuXend(self.home, guest)

    def start(self) -> None:
        self.xend.start()

    def create(self, name: str, address: str, mac: str, *more: tuple[str, str]) -> int:
        """Boot a guest with eth0 at ``address``; ``more`` vifs as (mac, address)."""
        config = ["vm", ["name", name], ["memory", MEMORY],
                  ["image", ["linux", ["kernel", self.guest.kernel],
                             ["ramdisk", self.guest.ramdisk],
                             ["args", f"quiet loglevel=3 xend.ip={address}/24"]]],
                  *(["device", ["vif", ["mac", m], ["ip", a]]]
                    for m, a in [(mac, address), *more])]
        reply = self.post("/xend/domain/", op="create", config=sxp.show(config), status=201)
        self.post(f"/xend/domain/{name}", op="unpause")
        return int(sxp.child_value(sxp.parse(reply), "id"))

    def post(self, url: str, status: int = 200, **form: str) -> str:
        reply = self.xend.post(url, **form)
        assert reply.status_code == status, reply.text
        return reply.text

    def sh(self, domid: int, command: str, answer: str, timeout: float = BOOT_TIMEOUT) -> str:
        port = self.home.console_port_base + domid
        done = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", CONSOLE,
                               str(port), command, answer, str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def tear_down(self) -> None:
        self.xend.close()
        try:
            self.home.tear_down()
        finally:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


class SharedHost:
    """The module's one ``Host``, which its tests take turns on."""

    def __init__(self, guest: Guest, reaper: Reaper) -> None:
        self.guest, self.reaper = guest, reaper
        self.current: Host | None = None

    def take(self) -> Host:
        if self.current is not None and not self.current.home.alive():
            self.drop()
        if self.current is None:
            self.current = Host(self.guest)
            self.current.start()
        return self.current

    def give_back(self) -> None:
        assert self.current is not None
        try:
            self.current.xend.destroy_all_but({"Domain-0"})
        except BaseException:
            self.drop()  # the next test gets a new host
            raise

    def drop(self) -> None:
        if self.current is not None:
            self.reaper.submit(self.current.ns, self.current.tear_down)
            self.current = None


def vif_counter(host: Host, name: str, metric: str) -> float | None:
    """Domain ``name``'s eth0 counter ``metric`` in ``GET /metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = host.xend.http.get("/metrics").text
    return next((sample.value for family in text_string_to_metric_families(text)
                 for sample in family.samples if sample.name == metric
                 and sample.labels.get("domain") == name
                 and sample.labels.get("device") == "eth0"), None)


@pytest.fixture(scope="module")
def shared_host(guest: Guest, reaper: Reaper) -> Iterator[SharedHost]:
    why = netns_usable()
    if why:
        pytest.skip(why)
    shared = SharedHost(guest, reaper)
    yield shared
    shared.drop()


@pytest.fixture
def netns_host(shared_host: SharedHost) -> Iterator[Host]:
    """The module's host in a namespace, with Domain-0 only; its tests' domains destroyed."""
    yield shared_host.take()
    shared_host.give_back()


def test_two_guests_on_the_bridge_ping_and_a_spoofer_is_cut_off(netns_host: Host) -> None:
    a = netns_host.create("qa", "10.88.0.11", "aa:00:00:00:88:11")
    b = netns_host.create("qb", "10.88.0.12", "aa:00:00:00:88:12")
    links = subprocess.run(["ip", "-n", netns_host.ns, "-o", "link", "show", "master",
                            "xen-br0"], capture_output=True, text=True).stdout
    assert f"vif{a}.0" in links and f"vif{b}.0" in links
    netns_host.sh(a, "echo READY-$((1))", "READY-1")
    netns_host.sh(b, "echo READY-$((1))", "READY-1")
    ping = "ping -c 3 -W 2 10.88.0.12 >/dev/null && echo PING-$((1))-OK || echo PING-$((0))-NO"
    assert netns_host.sh(a, ping, "PING-[01]-(OK|NO)", 60) == "PING-1-OK"
    # Its tap counted the pings both ways (metrics, issue 17: one netlink dump a sample).
    wait_for(lambda: all((vif_counter(netns_host, "qa", f"xend_domain_vif_{way}_total") or 0)
                         > 0 for way in ("transmit_packets", "receive_packets",
                                         "transmit_bytes", "receive_bytes")),
             timeout=30, what="qa's vif counters in a sample")

    netns_host.sh(a, "ip addr flush dev eth0; ip addr add 10.88.0.99/24 dev eth0;"
                     " echo MOVED-$((1))", "MOVED-1")
    assert netns_host.sh(a, ping, "PING-[01]-(OK|NO)", 60) == "PING-0-NO"

    netns_host.sh(a, "ip addr flush dev eth0; ip addr add 10.88.0.11/24 dev eth0;"
                     " echo BACK-$((1))", "BACK-1")
    assert netns_host.sh(a, ping, "PING-[01]-(OK|NO)", 60) == "PING-1-OK"

    netns_host.post("/xend/domain/qb", op="destroy", reason="halt")
    wait_for(lambda: f"vif{b}.0" not in subprocess.run(
        ["ip", "-n", netns_host.ns, "-o", "link"], capture_output=True, text=True).stdout,
        what="the destroyed guest's tap gone")


def test_a_guest_that_lost_a_vif_is_saved_and_restored_with_its_other_vif_working(
        netns_host: Host, tmp_path: Path) -> None:
    # The restored domain numbers its vifs afresh from the config (the second is now
    # vif 0): its nic must still land in the PCI slot the saved state expects.
    netns_host.create("qb", "10.88.0.12", "aa:00:00:00:88:12")
    a = netns_host.create("qa", "10.88.0.31", "aa:00:00:00:88:31",
                          ("aa:00:00:00:88:32", "10.88.0.32"))
    netns_host.sh(a, "[ -e /sys/class/net/eth1 ] && echo TWO-$((2))", "TWO-2")
    netns_host.post("/xend/domain/qa", op="device_destroy", type="vif", idx="0")
    netns_host.sh(a, "while [ -e /sys/class/net/eth0 ]; do sleep 0.2; done;"
                     " ip addr add 10.88.0.32/24 dev eth1; ip link set eth1 up;"
                     " echo SWAPPED-$((1))", "SWAPPED-1")
    ping = "ping -c 3 -W 2 10.88.0.12 >/dev/null && echo PING-$((1))-OK || echo PING-$((0))-NO"
    assert netns_host.sh(a, ping, "PING-[01]-(OK|NO)", 60) == "PING-1-OK"

    saved = tmp_path / "qa.save"
    netns_host.post("/xend/domain/qa", op="save", file=str(saved))
    restored = netns_host.post("/xend/domain/", op="restore", file=str(saved), status=201)
    a = int(sxp.child_value(sxp.parse(restored), "id"))
    vifs = sxp.parse(netns_host.post("/xend/domain/qa", op="vifs"))
    assert [sxp.child_value(v, "mac") for v in vifs] == ["aa:00:00:00:88:32"]
    assert netns_host.sh(a, ping, "PING-[01]-(OK|NO)", 60) == "PING-1-OK"


def test_a_paused_guest_s_vif_is_refused_and_kept_with_its_tap_until_it_runs(
        netns_host: Host) -> None:
    # Found by bench/torture.py --qemu: the destroy answered 200 and forgot the vif while
    # its tap stayed on the bridge, and every later vif of that number was refused with
    # "Interface already exists".
    a = netns_host.create("qp", "10.88.0.41", "aa:00:00:00:88:41")
    netns_host.sh(a, "echo READY-$((1))", "READY-1")
    tap = f"vif{a}.0"

    def ports() -> str:
        return subprocess.run(["ip", "-n", netns_host.ns, "-o", "link", "show", "master",
                               "xen-br0"], capture_output=True, text=True).stdout

    netns_host.post("/xend/domain/qp", op="pause")
    reply = netns_host.xend.op("qp", "device_destroy", type="vif", idx="0")
    assert reply.status_code == 409, reply.text
    assert "paused" in reply.text and "unpause it first" in reply.text
    vifs = sxp.parse(netns_host.post("/xend/domain/qp", op="vifs"))
    assert [sxp.child_value(v, "mac") for v in vifs] == ["aa:00:00:00:88:41"]
    assert tap in ports()

    netns_host.post("/xend/domain/qp", op="unpause")
    netns_host.post("/xend/domain/qp", op="device_destroy", type="vif", idx="0")
    wait_for(lambda: tap not in ports(), 30, f"{tap} gone from the bridge")
    assert sxp.parse(netns_host.post("/xend/domain/qp", op="vifs")) == []
    again = netns_host.post("/xend/domain/qp", op="device_create", config="(vif)")
    assert sxp.child_value(sxp.parse(again), "idx") == "0"
    wait_for(lambda: tap in ports(), 30, f"{tap} on the bridge again")


def test_a_hot_plug_cut_off_by_a_kill_9_is_undone_at_the_next_start(
        netns_host: Host, tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: xend killed after the vif's tap was on the bridge but
    # before the domain's record said so; the next xend adopted the domain without it, the
    # tap stayed, and every later vif of that number was refused "Interface already exists".
    holder = Holder(tmp_path)
    a = netns_host.create("qh", "10.88.0.51", "aa:00:00:00:88:51")
    tap = f"vif{a}.1"
    plug = f"(vif (mac aa:00:00:00:88:52) (script {holder.script}))"

    def plugged_not_recorded() -> None:
        assert tap in bridge_ports(netns_host)

    holder.kill_during("up", lambda: netns_host.xend.op("qh", "device_create", config=plug),
                       netns_host.home.kill9, plugged_not_recorded)

    netns_host.start()
    wait_for(lambda: tap not in links(netns_host), 30, f"{tap} gone")
    vifs = sxp.parse(netns_host.post("/xend/domain/qh", op="vifs"))
    assert [sxp.child_value(v, "mac") for v in vifs] == ["aa:00:00:00:88:51"]
    assert "undoing the hot-plug of vif 1 that xend was making when it stopped" in \
        netns_host.home.logfile.read_text()
    again = netns_host.post("/xend/domain/qh", op="device_create",
                            config="(vif (mac aa:00:00:00:88:52))")
    assert sxp.child_value(sxp.parse(again), "idx") == "1"
    wait_for(lambda: tap in bridge_ports(netns_host), 30, f"{tap} on the bridge again")


def test_a_device_destroy_cut_off_by_a_kill_9_is_finished_at_the_next_start(
        netns_host: Host, tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: xend killed after a device_destroy's vif script took
    # the vif off the bridge; the next xend listed the vif, with no tap on the bridge.
    holder = Holder(tmp_path)
    a = netns_host.create("qu", "10.88.0.71", "aa:00:00:00:88:71")
    netns_host.post("/xend/domain/qu", op="device_create",
                    config=f"(vif (mac aa:00:00:00:88:72) (script {holder.script}))")
    tap = f"vif{a}.1"
    wait_for(lambda: tap in bridge_ports(netns_host), 30, "the second vif bridged")
    def off_the_bridge_still_listed() -> None:
        assert tap not in bridge_ports(netns_host)

    holder.kill_during("down", lambda: netns_host.xend.op("qu", "device_destroy", type="vif",
                                                          idx="1"),
                       netns_host.home.kill9, off_the_bridge_still_listed)

    netns_host.start()
    wait_for(lambda: tap not in links(netns_host), 30, f"{tap} gone")
    # the record follows a moment after the tap goes (qemu's netdev_del)
    wait_for(lambda: [sxp.child_value(v, "mac") for v in sxp.parse(netns_host.post(
        "/xend/domain/qu", op="vifs"))] == ["aa:00:00:00:88:71"], 30, "the vif dropped")
    assert f"vif{a}.0" in bridge_ports(netns_host)


def test_a_vif_change_cut_off_by_a_kill_9_is_put_back_at_the_next_start(
        netns_host: Host, tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: xend killed between a device_configure's down and
    # up scripts; the next xend listed the vif as it was, its tap off the bridge.
    holder = Holder(tmp_path)
    a = netns_host.create("qc", "10.88.0.81", "aa:00:00:00:88:81")
    netns_host.post("/xend/domain/qc", op="device_create",
                    config=f"(vif (mac aa:00:00:00:88:82) (script {holder.script}))")
    tap = f"vif{a}.1"
    wait_for(lambda: tap in bridge_ports(netns_host), 30, "the second vif bridged")
    change = f"(vif (mac aa:00:00:00:88:82) (script {holder.script}) (ip 10.88.0.99))"

    def off_the_bridge() -> None:
        assert tap not in bridge_ports(netns_host)

    holder.kill_during("down", lambda: netns_host.xend.op("qc", "device_configure",
                                                          config=change, idx="1"),
                       netns_host.home.kill9, off_the_bridge)

    netns_host.start()
    wait_for(lambda: tap in bridge_ports(netns_host), 30, f"{tap} on the bridge again")
    vifs = sxp.parse(netns_host.post("/xend/domain/qc", op="vifs"))
    assert [sxp.child_value(v, "ip") for v in vifs] == ["10.88.0.81", None]  # as it was
    assert "putting vif 1 back as it was" in netns_host.home.logfile.read_text()
    changed = sxp.parse(netns_host.post("/xend/domain/qc", op="device_configure",
                                        config=change, idx="1"))
    assert sxp.child_value(changed, "ip") == "10.88.0.99"
    assert tap in bridge_ports(netns_host)


def test_a_destroy_cut_off_by_a_kill_9_is_finished_at_the_next_start(
        netns_host: Host, tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: xend killed after a vif's script took it off the
    # bridge but before the qemu ended; the next xend adopted the domain as running, its
    # guest cut off from the network.
    holder = Holder(tmp_path)
    a = netns_host.create("qe", "10.88.0.61", "aa:00:00:00:88:61")
    netns_host.post("/xend/domain/qe", op="device_create",
                    config=f"(vif (mac aa:00:00:00:88:62) (script {holder.script}))")
    wait_for(lambda: f"vif{a}.1" in bridge_ports(netns_host), 30, "the second vif bridged")
    pid = netns_host.xend.qemu_pid(a)
    def off_the_bridge_qemu_running() -> None:
        assert f"vif{a}.1" not in bridge_ports(netns_host)
        assert not process_gone(pid)

    holder.kill_during("down", lambda: netns_host.xend.op("qe", "destroy", reason="halt"),
                       netns_host.home.kill9, off_the_bridge_qemu_running)

    netns_host.start()
    wait_for(lambda: process_gone(pid), 30, "the qemu ended")
    assert "qe" not in netns_host.xend.names()
    assert not {f"vif{a}.0", f"vif{a}.1"} & set(links(netns_host).split())
    assert "Domain qe was being destroyed when xend stopped; destroying it" in \
        netns_host.home.logfile.read_text()


def links(host: Host) -> str:
    """The names of the links in the host's namespace, one a line."""
    return subprocess.run(["ip", "-n", host.ns, "-o", "link", "show"], capture_output=True,
                          text=True).stdout.replace("@", ": ").replace(":", " ")


def bridge_ports(host: Host) -> str:
    return subprocess.run(["ip", "-n", host.ns, "-o", "link", "show", "master", "xen-br0"],
                          capture_output=True, text=True).stdout


def test_a_guest_that_shuts_down_while_xend_waits_for_its_disk_ends_the_wait_at_once(
        qemu: QemuXend, tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: the unplug waited its whole timeout for a guest
    # that had powered off (and the domain's end with it), then answered 500.
    xend = qemu
    qs = sxp.child_value(xend.create_vm(
        "qs", ["device", sxp.parse(vbd(image(tmp_path, "deaf.img"), "sda1", "w"))],
        args="acpiphp.disable=1"), "id")
    replies: list[httpx.Response] = []
    unplugging = threading.Thread(target=lambda: replies.append(
        xend.op("qs", "device_destroy", type="vbd", idx="0")))
    with console(xend.console_port("qs")) as con:
        booted(con)
        unplugging.start()
        try:
            wait_for(lambda: f"Domain {qs}: unplugging vbd-" in xend.home.logfile.read_text(),
                     what="the unplug under way")
            con.type("poweroff -f")
            began = time.monotonic()
            unplugging.join(60)
            took = time.monotonic() - began
        finally:
            unplugging.join(60)
    assert replies and replies[0].status_code == 200, replies
    assert took < 10, f"the unplug went on {took:.1f} s after the guest powered off"
    wait_for(lambda: "qs" not in xend.names(), what="the powered-off domain to go")


def test_a_disk_of_mode_w_bang_is_shared_by_two_guests(qemu: QemuXend, tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: the second create answered 500 "Failed to get
    # write lock"; w! is Xen's "shared writable", the user's word that sharing is fine.
    xend = qemu
    disk = image(tmp_path, "shared.img")
    for name in ("qw1", "qw2"):
        xend.create_vm(name, ["device", sxp.parse(vbd(disk, "sda1", "w!"))], start=False)
    for name in ("qw1", "qw2"):
        vbds = sxp.parse(xend.http.get(f"/xend/domain/{name}", params={"op": "vbds"}).text)
        assert [sxp.child_value(v, "mode") for v in vbds] == ["w!"]


def test_a_disk_another_qemu_holds_is_a_409(qemu: QemuXend, tmp_path: Path) -> None:
    # A qemu xend does not know (a leftover, another tool) holds the image's write lock.
    xend = qemu
    assert QEMU is not None
    disk = image(tmp_path, "held.img")
    holder = subprocess.Popen([QEMU, "-machine", "pc,accel=tcg", "-nodefaults", "-display",
                               "none", "-S", "-m", "16",
                               "-drive", f"file={disk},format=raw,if=virtio"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        def locked() -> bool:
            # qemu-io opens it read-write, as a guest's disk would be
            probe = subprocess.run(["qemu-io", "-f", "raw", "-c", "quit", str(disk)],
                                   capture_output=True, text=True, check=False)
            return "lock" in probe.stderr
        wait_for(locked, timeout=30, what="the other qemu to lock the image")
        config = vm(xend.guest, "ql", ["device", sxp.parse(vbd(disk, "sda1", "w"))])
        reply = xend.post("/xend/domain/", op="create", config=sxp.show(config))
        message = xend.error(reply, 409)
        assert f"disk {disk} is in use by another guest" in message, message
        assert "ql" not in xend.names()
    finally:
        holder.kill()
        holder.wait(timeout=10)


# A vif script whose "up" kills its domain's qemu (as the torture run did, at random) and
# then fails as vif-bridge does when the tap went with it.
QEMU_KILLER = '''#!/usr/bin/env python3
import json, os, signal, sys, time
from pathlib import Path
args = dict(word.split("=", 1) for word in sys.argv[2:] if "=" in word)
if sys.argv[1] != "up":
    sys.exit(0)
domid = args["vif"][len("vif"):].split(".")[0]
state = Path(os.environ["XEND_RUN_DIR"]) / "qemu" / domid / "state.json"
pid = json.loads(state.read_text())["pid"]
os.kill(pid, signal.SIGKILL)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
            break
    except FileNotFoundError:
        break
    time.sleep(0.02)
sys.exit(f"vif-killer: no such network device {args['vif']}")
'''


@pytest.fixture
def qemu_killer(tmp_path: Path) -> Path:
    script = tmp_path / "vif-killer"
    script.write_text(QEMU_KILLER)
    script.chmod(0o755)
    return script


def test_a_qemu_that_dies_during_a_create_is_said_so(qemu: QemuXend, qemu_killer: Path) -> None:
    # Found by bench/torture.py --qemu: the 500 said "no such network device vifN.0".
    xend = qemu
    config = vm(xend.guest, "qc", ["device", ["vif", ["script", str(qemu_killer)]]])
    reply = xend.post("/xend/domain/", op="create", config=sxp.show(config))
    message = xend.error(reply, 500)  # the hypervisor's failure, as README says
    assert "the qemu process of domain qc died while the domain was built" in message, message
    assert "qc" not in xend.names()


def test_a_hot_plug_into_a_restarting_domain_is_a_409(qemu: QemuXend, qemu_killer: Path) -> None:
    # Found by bench/torture.py --qemu: a vif plugged while the domain's reboot was under
    # way (its qemu gone) answered 500 "netif backend says: Non-specific error".
    xend = qemu
    domid = int(sxp.child_value(xend.create_vm("qr", start=False), "id"))
    xend.do("qr", "shutdown", reason="reboot")  # pending: the paused guest cannot act on it
    reply = xend.op("qr", "device_create", config=sxp.show(["vif", ["script",
                                                                   str(qemu_killer)]]))
    message = xend.error(reply, 409)
    assert "domain qr is restarting; try again once it runs" in message, message
    restarted(xend, "qr", domid)
    assert xend.get_sxp("/xend/domain/qr", op="vifs") == []
