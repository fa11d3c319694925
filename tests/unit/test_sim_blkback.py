"""The simulated block backend: blkback's answers to CMSG_BLKIF_BE, and the guest's disks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_sim_model import Screen, booted, shell
from xend_actors.errors import BadRequest, Conflict, NotFound, XendError
from xend_actors.hypervisor.base import LinuxImage
from xend_actors.hypervisor.ring import messages
from xend_actors.hypervisor.ring.messages import (
    BlkifBeConnect,
    BlkifBeCreate,
    BlkifBeDestroy,
    BlkifBeDisconnect,
    BlkifBeDriverStatus,
    BlkifBeVbdCreate,
    BlkifBeVbdDestroy,
    BlkifBeVbdGrow,
    BlkifBeVbdShrink,
    BlkifStatus,
    DriverStatus,
    Extent,
    Message,
)
from xend_actors.hypervisor.sim.clock import ManualClock
from xend_actors.hypervisor.sim.model import SimHypervisor

IMAGE = LinuxImage("/boot/vmlinuz-2.6-xenU", "", "root=/dev/xvda1 ro")
WHOLE = 1 << 63  # xend's extent: the whole device (facts §5.3)
HDA1 = 0x0301

OK = BlkifStatus.OKAY


@pytest.fixture
def hv() -> SimHypervisor:
    return SimHypervisor(4096, 4, ManualClock(), shutdown_delay=0.03)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(1 << 20))  # 1 MiB: 2048 sectors
    return path


def send(hv: SimHypervisor, message: Message) -> BlkifStatus:
    """Send a backend request to domain 0; the status of the answer, which echoes it."""
    answer = hv.send_control(0, message)
    assert type(answer) is type(message)
    assert {k: v for k, v in vars(answer).items() if k != "status"} == \
        {k: v for k, v in vars(message).items() if k != "status"}
    return answer.status  # type: ignore[attr-defined]


def grow(domid: int, device: int, vdev: int = HDA1, start: int = 0,
         length: int = WHOLE) -> BlkifBeVbdGrow:
    return BlkifBeVbdGrow(domid, 0, vdev, Extent(start, length, device))


def with_vbd(hv: SimHypervisor, disk: Path, *, readonly: bool = False,
             backing_ro: bool = False) -> tuple[int, Screen]:
    """A running domain with vbd 0x0301 on ``disk``, the console attached."""
    domid = hv.create("web", 256)
    hv.build(domid, IMAGE)
    device = hv.attach_backing(str(disk), backing_ro)
    assert send(hv, BlkifBeCreate(domid, 0)) is OK
    assert send(hv, BlkifBeVbdCreate(domid, 0, HDA1, int(readonly))) is OK
    assert send(hv, grow(domid, device)) is OK
    screen = Screen()
    hv.console(domid).attach(screen)
    hv.unpause(domid)
    return domid, screen


# --- interfaces ------------------------------------------------------------------------

def test_create_then_create_again_says_the_interface_exists(hv: SimHypervisor) -> None:
    domid = hv.create("web", 64)
    assert send(hv, BlkifBeCreate(domid, 0)) is OK
    assert send(hv, BlkifBeCreate(domid, 0)) is BlkifStatus.INTERFACE_EXISTS
    assert send(hv, BlkifBeCreate(domid, 1)) is OK  # another handle is another interface


def test_an_unknown_frontend_domain_gets_a_non_ok_status(hv: SimHypervisor) -> None:
    assert send(hv, BlkifBeCreate(77, 0)) is BlkifStatus.ERROR
    assert send(hv, BlkifBeDestroy(77, 0)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, BlkifBeConnect(77, 0, 0x1234, 5)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, BlkifBeDisconnect(77, 0)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, BlkifBeVbdCreate(77, 0, HDA1)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, grow(77, 0x700)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, BlkifBeVbdShrink(77, 0, HDA1)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, BlkifBeVbdDestroy(77, 0, HDA1)) is BlkifStatus.INTERFACE_NOT_FOUND


def test_destroy_refuses_a_connected_interface_until_disconnected(hv: SimHypervisor) -> None:
    domid = hv.create("web", 64)
    assert send(hv, BlkifBeDestroy(domid, 0)) is BlkifStatus.INTERFACE_NOT_FOUND
    send(hv, BlkifBeCreate(domid, 0))
    assert send(hv, BlkifBeConnect(domid, 0, 0x1234, 5)) is OK
    assert send(hv, BlkifBeConnect(domid, 0, 0x1234, 5)) is BlkifStatus.INTERFACE_CONNECTED
    assert send(hv, BlkifBeDestroy(domid, 0)) is BlkifStatus.INTERFACE_CONNECTED
    assert send(hv, BlkifBeDisconnect(domid, 0)) is OK
    assert send(hv, BlkifBeDisconnect(domid, 0)) is OK  # blkback: not connected is fine
    assert send(hv, BlkifBeDestroy(domid, 0)) is OK
    assert send(hv, BlkifBeDestroy(domid, 0)) is BlkifStatus.INTERFACE_NOT_FOUND


def test_the_status_turns_into_an_error_through_check(hv: SimHypervisor) -> None:
    answer = hv.send_control(0, BlkifBeDestroy(5, 0))
    with pytest.raises(XendError, match="vbd hda1: blkif backend says: Interface not found"):
        messages.check(answer, "vbd hda1")


def test_backend_requests_go_to_domain_0_only(hv: SimHypervisor) -> None:
    domid = hv.create("web", 64)
    with pytest.raises(BadRequest, match=f"domain {domid} runs no block backend"):
        hv.send_control(domid, BlkifBeCreate(domid, 0))
    with pytest.raises(BadRequest, match="takes no BlkifBeDriverStatus"):
        hv.send_control(0, BlkifBeDriverStatus(DriverStatus.UP))


# --- vbds ------------------------------------------------------------------------------

def test_vbd_create_grow_shrink_destroy_and_their_statuses(
        hv: SimHypervisor, disk: Path) -> None:
    domid = hv.create("web", 64)
    device = hv.attach_backing(str(disk))
    assert device == 0x0700
    assert send(hv, BlkifBeVbdCreate(domid, 0, HDA1)) is BlkifStatus.INTERFACE_NOT_FOUND
    send(hv, BlkifBeCreate(domid, 0))
    assert send(hv, grow(domid, device)) is BlkifStatus.VBD_NOT_FOUND
    assert send(hv, BlkifBeVbdShrink(domid, 0, HDA1)) is BlkifStatus.VBD_NOT_FOUND
    assert send(hv, BlkifBeVbdDestroy(domid, 0, HDA1)) is BlkifStatus.VBD_NOT_FOUND
    assert send(hv, BlkifBeVbdCreate(domid, 0, HDA1, 1)) is OK
    assert send(hv, BlkifBeVbdCreate(domid, 0, HDA1, 0)) is BlkifStatus.VBD_EXISTS
    assert send(hv, BlkifBeVbdShrink(domid, 0, HDA1)) is BlkifStatus.EXTENT_NOT_FOUND
    assert send(hv, grow(domid, 0x0799)) is BlkifStatus.EXTENT_NOT_FOUND  # no such device
    assert send(hv, grow(domid, device, start=8)) is BlkifStatus.EXTENT_NOT_FOUND
    assert send(hv, grow(domid, device)) is OK
    disks = hv.block.disks_of(domid)
    [vbd] = disks.list()
    assert (vbd.vdevice, vbd.sectors, vbd.readonly) == (HDA1, 2048, True)  # cut to the file
    assert send(hv, grow(domid, device, length=16)) is OK  # a second extent adds on
    assert disks.list()[0].sectors == 2048 + 16
    assert send(hv, BlkifBeVbdShrink(domid, 0, HDA1)) is OK  # the last extent goes
    assert disks.list()[0].sectors == 2048
    assert send(hv, BlkifBeVbdDestroy(domid, 0, HDA1)) is OK
    assert disks.list() == []


def test_an_empty_backing_has_no_extent(hv: SimHypervisor, tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"x" * 1000)  # less than 1 KiB: blkback sees size 0
    domid = hv.create("web", 64)
    send(hv, BlkifBeCreate(domid, 0))
    send(hv, BlkifBeVbdCreate(domid, 0, HDA1))
    assert send(hv, grow(domid, hv.attach_backing(str(empty)))) is BlkifStatus.EXTENT_NOT_FOUND


def test_destroying_the_interface_or_the_domain_takes_the_vbds(
        hv: SimHypervisor, disk: Path) -> None:
    domid, _ = with_vbd(hv, disk)
    send(hv, BlkifBeCreate(domid, 1))
    send(hv, BlkifBeVbdCreate(domid, 1, 0x0302))
    device = hv.backings()[0].device
    with pytest.raises(Conflict, match=f"in use by vbd {domid}/0/0x0301"):
        hv.detach_backing(device)
    assert send(hv, BlkifBeDestroy(domid, 0)) is OK
    assert [v.vdevice for v in hv.block.disks_of(domid).list()] == [0x0302]
    hv.detach_backing(device)  # no longer in use
    hv.destroy(domid)
    assert hv.block.disks_of(domid).list() == []
    assert send(hv, BlkifBeDestroy(domid, 1)) is BlkifStatus.INTERFACE_NOT_FOUND
    assert send(hv, BlkifBeVbdCreate(domid, 1, 0x0302)) is BlkifStatus.INTERFACE_NOT_FOUND


def test_backings_are_checked_and_numbered_like_loop_devices(
        hv: SimHypervisor, disk: Path, tmp_path: Path) -> None:
    assert hv.attach_backing(str(disk), True) == 0x0700
    assert hv.attach_backing(str(disk)) == 0x0701
    hv.detach_backing(0x0700)
    assert hv.attach_backing(str(disk)) == 0x0700
    assert [(b.device, b.readonly) for b in hv.backings()] == [(0x0700, False), (0x0701, False)]
    with pytest.raises(NotFound, match="no such file"):
        hv.attach_backing(str(tmp_path / "missing.img"))
    with pytest.raises(BadRequest, match="absolute"):
        hv.attach_backing("disk.img")
    with pytest.raises(NotFound, match="no backing device 0x0705"):
        hv.detach_backing(0x0705)


# --- the guest's disks -----------------------------------------------------------------

def test_lsblk_lists_the_vbds_of_the_domain(hv: SimHypervisor, disk: Path) -> None:
    domid, screen = with_vbd(hv, disk, readonly=True)
    out = shell(hv, domid, screen, "lsblk")
    assert "VDEV" in out and "0x0301" in out
    row = next(line for line in out.splitlines() if line.startswith("0x0301"))
    assert row.split() == ["0x0301", "2048", "1048576", "ro"]


def test_data_written_in_the_guest_is_in_the_file_and_reads_back(
        hv: SimHypervisor, disk: Path) -> None:
    domid, screen = with_vbd(hv, disk)
    out = shell(hv, domid, screen, "disk 0x0301 write 4096 hello block world")
    assert "wrote 17 bytes at 4096" in out
    assert disk.read_bytes()[4096:4096 + 17] == b"hello block world"
    assert "hello block world" in shell(hv, domid, screen, "disk 0x301 read 4096 17")
    assert "lo bl\r\n" in shell(hv, domid, screen, f"disk {HDA1} read 4099 5")
    # it survives the domain: a new one on the same file reads it
    hv.destroy(domid)
    domid, screen = with_vbd(hv, disk)
    assert "hello block world" in shell(hv, domid, screen, "disk 0x0301 read 4096 17")


def test_a_read_only_vbd_refuses_writes_like_a_kernel(hv: SimHypervisor, disk: Path) -> None:
    domid, screen = with_vbd(hv, disk, readonly=True)
    out = shell(hv, domid, screen, "disk 0x0301 write 0 nope")
    assert "disk: write error: Read-only file system" in out
    assert disk.read_bytes()[:4] == bytes(4)


def test_a_read_only_backing_refuses_writes_too(hv: SimHypervisor, disk: Path) -> None:
    domid, screen = with_vbd(hv, disk, backing_ro=True)
    assert "Read-only file system" in shell(hv, domid, screen, "disk 0x0301 write 0 nope")


def test_disk_errors_and_usage(hv: SimHypervisor, disk: Path) -> None:
    domid, screen = with_vbd(hv, disk)
    assert "disk: read error: No such device" in shell(hv, domid, screen, "disk 0x0302 read 0 4")
    assert "No space left on device" in shell(hv, domid, screen,
                                               f"disk 0x0301 write {(1 << 20) - 2} abcd")
    assert "usage: disk" in shell(hv, domid, screen, "disk 0x0301 erase 0")
    assert "usage: disk" in shell(hv, domid, screen, "disk 0x0301 read zero 4")
    assert "usage: disk" in shell(hv, domid, screen, "disk 0x0301 write 0")
    # a read past the end is short, as on a block device
    assert shell(hv, domid, screen, f"disk 0x0301 read {1 << 20} 4").endswith("\r\n\r\n# ")


def test_a_guest_without_vbds_lists_none(hv: SimHypervisor) -> None:
    domid, screen = booted(hv)
    out = shell(hv, domid, screen, "lsblk")
    assert "VDEV" in out and "0x" not in out
