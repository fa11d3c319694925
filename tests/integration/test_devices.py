"""Virtual block devices and network interfaces on the sim, through a real xend + simhv.

The sim's block backend reads and writes the image files for real and its guest
performs the frontend handshake, so these tests see what a user of a Xen host would:
the disk in the guest, data that outlives a reboot, the vif connected with its event
channels, refusals that leave nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.processes import wait_for
from tests.support.xend import Xend, sim_vm
from xend_actors import sxp
from xend_actors.hypervisor.sim.driver import SimDriver

pytestmark = pytest.mark.integration

PROMPT = b"# "
SDA1 = 0x801  # what the guest calls sda1


def create(xend: Xend, name: str, *devices: sxp.Value) -> httpx.Response:
    """POST the create of a sim domain with these devices; the reply as it is."""
    return xend.post("/xend/domain/", op="create",
                     config=sxp.show(sim_vm(name, *(["device", d] for d in devices))))


def sh(xend: Xend, dom: str, command: str, expect: str) -> str:
    """Type ``command`` on the domain's console; the output up to ``expect``."""
    return xend.sh(dom, command, expect, PROMPT)


def backings(xend: Xend) -> list[tuple[int, str, bool]]:
    """The host files the sim's block backend has open."""
    driver = SimDriver(xend.home.simhv_socket)
    try:
        return driver.backings()
    finally:
        driver.close()


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    return image


def vbd(path: Path, dev: str = "sda1", mode: str = "w") -> list:
    return ["vbd", ["uname", f"file:{path}"], ["dev", dev], ["mode", mode]]


def field(info: sxp.Value, key: str) -> str:
    return str(sxp.child_value(info, key))


# --- block devices -------------------------------------------------------------------------


def test_a_vbd_is_the_guests_disk_and_its_data_outlives_a_reboot(xend: Xend, disk: Path) -> None:
    info = xend.start_sim("d1", vbd(disk))
    [vbd_info] = sxp.children(sxp.child(info, "devices"), "vbd")
    assert (field(vbd_info, "idx"), field(vbd_info, "vdev"), field(vbd_info, "mode"),
            field(vbd_info, "dev"), field(vbd_info, "uname"), field(vbd_info, "node")) == \
        ("0", str(SDA1), "w", "sda1", f"file:{disk}", str(disk))
    assert f"{SDA1:#06x}" in sh(xend, "d1", "lsblk", "rw")
    assert "wrote 11" in sh(xend, "d1", f"disk {SDA1:#x} write 4096 hello-disk!", "wrote")
    assert disk.read_bytes()[4096:4107] == b"hello-disk!"

    domid = field(xend.info("d1"), "id")
    xend.ok(xend.post("/xend/domain/d1", op="shutdown", reason="reboot"), 202)
    xend.events.wait_line(f"xend.domain.restart (d1 {domid} success)")
    assert "hello-disk!" in sh(xend, "d1", f"disk {SDA1:#x} read 4096 11", "hello")
    assert xend.devices("d1", "vbds") == [vbd_info]


def test_a_read_only_vbd_cannot_be_written_by_the_guest(xend: Xend, disk: Path) -> None:
    xend.start_sim("ro", vbd(disk, mode="r"))
    assert "Read-only file system" in sh(xend, "ro", f"disk {SDA1:#x} write 0 x", "error")
    assert disk.read_bytes()[:1] == b"\0"


def test_a_writable_disk_is_not_shared_but_read_only_ones_are(xend: Xend, disk: Path) -> None:
    w1 = field(xend.start_sim("w1", vbd(disk)), "id")
    message = xend.error(create(xend, "w2", vbd(disk, mode="r")), 409)
    assert message == f"Error creating domain: vbd sda1 (file:{disk}): vbd: Segment {disk} " \
        f"is in writable use (domain {w1})"
    assert sorted(xend.names()) == ["Domain-0", "w1"]
    xend.ok(xend.post("/xend/domain/w1", op="destroy", reason="halt"))
    xend.start_sim("r1", vbd(disk, mode="r"))
    xend.start_sim("r2", vbd(disk, mode="r"))
    message = xend.error(create(xend, "w3", vbd(disk)), 409)
    assert "is in read-only use" in message
    xend.start_sim("w4", vbd(disk, mode="w!"))  # '!' skips the check, as in the original


def test_a_backend_error_status_is_a_clear_error_and_leaves_nothing(
        xend: Xend, tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.touch()
    message = xend.error(create(xend, "e1", vbd(empty)), 500)
    assert message == (f"Error creating domain: vbd sda1 (file:{empty}): "
                       "blkif backend says: Extent not found for VBD")
    assert xend.names() == ["Domain-0"]
    assert backings(xend) == []


def test_hot_plug_adds_and_removes_a_vbd_on_a_running_domain(
        xend: Xend, disk: Path, tmp_path: Path) -> None:
    xend.start_sim("hp")
    created = xend.ok(xend.post("/xend/domain/hp", op="device_create",
                                config=sxp.show(vbd(disk, dev="sdb"))))
    assert (sxp.name(created), field(created, "idx"), field(created, "dev")) == ("vbd", "0", "sdb")
    assert "0x0810" in sh(xend, "hp", "lsblk", "rw")
    config = sxp.child_value(xend.info("hp"), "config")
    assert [sxp.child0(d) for d in sxp.children(config, "device")] == [vbd(disk, dev="sdb")]
    assert xend.devices("hp", "vbds") == [created]
    assert xend.ok(xend.http.get("/xend/domain/hp", params={"op": "vbd", "vbd": "0"})) == created

    empty = tmp_path / "empty.img"
    empty.touch()
    refused = xend.post("/xend/domain/hp", op="device_create", config=sxp.show(vbd(empty, "sdc")))
    assert "Extent not found for VBD" in xend.error(refused, 500)
    assert xend.devices("hp", "vbds") == [created]
    assert [path for _, path, _ in backings(xend)] == [str(disk)]

    assert xend.post("/xend/domain/hp", op="device_destroy", type="vbd", idx="0").text == "None"
    assert xend.devices("hp", "vbds") == []
    assert "0x0810" not in sh(xend, "hp", "lsblk", "MODE")
    assert sxp.children(sxp.child_value(xend.info("hp"), "config"), "device") == []
    assert backings(xend) == []


def test_device_requests_with_bad_input_are_refused(xend: Xend, disk: Path) -> None:
    xend.start_sim("bad")
    cases = [
        ({"op": "device_create", "config": "(vbd (uname file:/x) (dev sdz9))"}, 400,
         "vbd: Device not found: sdz9"),
        ({"op": "device_create", "config": "(vbd (dev sda1))"}, 400, "vbd: Missing uname"),
        ({"op": "device_create", "config": "(vbd (uname nbd:host:1) (dev sda1))"}, 400,
         "no block script for type 'nbd'"),
        ({"op": "device_create", "config": "(floppy)"}, 400, "unknown device type: floppy"),
        ({"op": "device_destroy", "type": "vbd", "idx": "3"}, 404, "has no vbd 3"),
        ({"op": "device_destroy", "type": "tape", "idx": "0"}, 400, "invalid device type: tape"),
        ({"op": "device_configure", "config": sxp.show(vbd(disk)), "idx": "0"}, 400,
         "only a vif's bridge, script and ip can be changed"),
    ]
    for fields, status, message in cases:
        assert message in xend.error(xend.post("/xend/domain/bad", **fields), status), fields
    missing = xend.http.get("/xend/domain/bad", params={"op": "vbd", "vbd": "0"})
    assert "has no vbd 0" in xend.error(missing, 404)
    assert xend.devices("bad", "vbds") == []


def test_block_scripts_bind_and_unbind_other_uname_types(
        fresh_xend: Callable[..., Xend], tmp_path: Path) -> None:
    log = tmp_path / "calls"
    script = tmp_path / "block-scratch"
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s|' \"$@\" >> {log}; echo >> {log}\n"
        f'[ "$1" = bind ] && {{ truncate -s 1M {tmp_path}/"$2".img; echo {tmp_path}/"$2".img; }}\n'
        "exit 0\n")
    script.chmod(0o755)
    # The config's own words for the script come after xend's, split as a shell would.
    xend = fresh_xend(f"(block-scratch \"{script} 'pool=fast ssd'\")\n")
    info = xend.start_sim("bs", ["vbd", ["uname", "scratch:vol1:extra"], ["dev", "sda1"]])
    [vbd_info] = sxp.children(sxp.child(info, "devices"), "vbd")
    assert field(vbd_info, "node") == f"{tmp_path}/vol1.img"
    assert log.read_text() == "bind|vol1|extra|pool=fast ssd|\n"
    xend.ok(xend.post("/xend/domain/bs", op="destroy", reason="halt"))
    assert log.read_text() == ("bind|vol1|extra|pool=fast ssd|\n"
                               f"unbind|{tmp_path}/vol1.img|pool=fast ssd|\n")


def test_a_missing_block_script_is_said_at_start_and_its_disks_are_refused(
        fresh_xend: Callable[..., Xend]) -> None:
    """The original's configs name block-file and block-enbd, which xend-actors does not
    ship: xend starts all the same, says so, and a disk of that type is refused."""
    xend = fresh_xend("(block-nbd /nowhere/block-nbd)\n")
    assert "(block-nbd '/nowhere/block-nbd'): no script /nowhere/block-nbd" in \
        xend.home.logfile.read_text()
    refused = create(xend, "nbd", ["vbd", ["uname", "nbd:host:1"], ["dev", "sda1"]])
    assert "/nowhere/block-nbd" in xend.error(refused, refused.status_code)
    assert refused.status_code >= 400
    assert xend.http.get("/xend/domain/nbd").status_code == 404


def test_devices_and_their_claims_survive_a_xend_restart(
        fresh_xend: Callable[..., Xend], disk: Path) -> None:
    xend = fresh_xend()
    info = xend.start_sim("keep", vbd(disk))
    devices = sxp.child(info, "devices")
    assert xend.home.xend("stop").returncode == 0
    xend.start()
    assert sxp.child(xend.info("keep"), "devices") == devices
    assert "in writable use" in xend.error(create(xend, "other", vbd(disk)), 409)
    assert "wrote" in sh(xend, "keep", f"disk {SDA1:#x} write 0 still-here", "wrote")
    xend.ok(xend.post("/xend/domain/keep", op="device_destroy", type="vbd", idx="0"))
    assert backings(xend) == []


# --- network interfaces --------------------------------------------------------------------


def vif_evtchn(xend: Xend, dom: str) -> list | None:
    vifs = xend.devices(dom, "vifs")
    return sxp.child(vifs[0], "evtchn") if vifs else None


def test_a_vif_connects_through_the_frontend_handshake(xend: Xend) -> None:
    info = xend.start_sim("n1", ["vif", ["mac", "aa:00:00:12:34:56"], ["ip", "10.0.0.5"]])
    [vif] = sxp.children(sxp.child(info, "devices"), "vif")
    assert (field(vif, "idx"), field(vif, "mac"), field(vif, "bridge"), field(vif, "script"),
            field(vif, "ip"), field(vif, "link")) == \
        ("0", "aa:00:00:12:34:56", "null", "vif-bridge", "10.0.0.5", f"vif{field(info, 'id')}.0")
    assert sxp.child(vif, "evtchn") is None  # paused: the frontend has not connected yet
    evtchn = wait_for(lambda: vif_evtchn(xend, "n1"), what="the vif's event channel")
    assert int(evtchn[2]) >= 2  # the guest's port; 1 is the control channel
    assert "eth0  HWaddr aa:00:00:12:34:56  connected" in sh(xend, "n1", "ifconfig", "connected")


def test_hot_plugged_vifs_connect_and_go(xend: Xend) -> None:
    xend.start_sim("n2")
    created = xend.ok(xend.post("/xend/domain/n2", op="device_create", config="(vif)"))
    assert field(created, "mac").startswith("aa:00:00:")
    wait_for(lambda: vif_evtchn(xend, "n2"), what="the hot-plugged vif connected")
    assert "eth0" in sh(xend, "n2", "ifconfig", "connected")
    xend.ok(xend.post("/xend/domain/n2", op="device_destroy", type="vif", idx="0"))
    assert xend.devices("n2", "vifs") == []
    assert "no network interfaces" in sh(xend, "n2", "ifconfig", "no network")


def test_a_vifs_bridge_and_addresses_can_be_changed_but_not_its_mac(xend: Xend) -> None:
    xend.start_sim("n4", ["vif", ["mac", "aa:00:00:00:04:01"], ["ip", "10.0.0.4"]])
    changed = xend.ok(xend.post("/xend/domain/n4", op="device_configure", idx="0",
                                config="(vif (ip 10.0.0.44) (ip 10.0.1.0/24))"))
    assert (field(changed, "mac"), [ip[1] for ip in sxp.children(changed, "ip")]) == \
        ("aa:00:00:00:04:01", ["10.0.0.44", "10.0.1.0/24"])
    config = sxp.child_value(xend.info("n4"), "config")
    [vif] = [sxp.child0(d) for d in sxp.children(config, "device")]
    assert [ip[1] for ip in sxp.children(vif, "ip")] == ["10.0.0.44", "10.0.1.0/24"]
    refused = xend.post("/xend/domain/n4", op="device_configure", idx="0",
                        config="(vif (mac aa:00:00:00:04:99))")
    assert "the mac cannot be changed" in xend.error(refused, 409)


def test_vif_scripts_take_the_configs_arguments_after_xends_words(
        fresh_xend: Callable[..., Xend], tmp_path: Path) -> None:
    log = tmp_path / "calls"
    script = tmp_path / "vif-log"
    script.write_text(f"#!/bin/sh\nprintf '%s|' \"$@\" >> {log}; echo >> {log}\n")
    script.chmod(0o755)
    xend = fresh_xend(f"(vif-script \"{script} 'mode=x y'\")\n")
    info = xend.start_sim("va", ["vif", ["mac", "aa:00:00:00:0a:01"]])
    words = log.read_text().splitlines()[0].split("|")[:-1]
    assert words[0] == "up" and words[-1] == "mode=x y"
    assert f"vif=vif{field(info, 'id')}.0" in words and "mac=aa:00:00:00:0a:01" in words
    # A vif's own script is a command too; one that does not split is refused at once.
    reply = create(xend, "vb", ["vif", ["script", "vif-bridge 'open"]])
    assert xend.error(reply, 400) == ("vif: invalid script: cannot split \"vif-bridge 'open\" "
                                      "as a shell would: no closing quotation")


def test_a_failing_vif_script_is_one_clear_error_and_no_domain(xend: Xend) -> None:
    reply = create(xend, "n3", ["vif", ["script", "vif-nowhere"]])
    message = xend.error(reply, 500)
    assert message.startswith("Error creating domain: vif 0 (vif")
    assert "vif script vif-nowhere up" in message and "not found" in message
    assert xend.names() == ["Domain-0"]


def test_xm_lists_creates_and_destroys_devices(xend: Xend, disk: Path) -> None:
    xend.start_sim("x1", ["vif", ["mac", "aa:00:00:00:00:01"]])

    def xm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xend_actors.xm.main", *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "XEND_UNIX_PATH": str(xend.home.unix_path)})

    made = xm("vbd-create", "x1", f"file:{disk}", "sda1", "w")
    assert made.returncode == 0, made.stderr
    listed = xm("vbd-list", "x1")
    assert listed.stdout == made.stdout
    assert sxp.parse(listed.stdout) == xend.devices("x1", "vbds")[0]
    assert "(mac aa:00:00:00:00:01)" in xm("vif-list", "x1").stdout
    assert xm("vbd-destroy", "x1", "0").returncode == 0
    assert xm("vbd-list", "x1").stdout == ""
    failed = xm("vbd-destroy", "x1", "0")
    assert (failed.returncode, failed.stderr) == (1, "Error: domain x1 has no vbd 0\n")
