"""xend-simhv as xend uses it: a real process started by ensure_simhv, driven by SimDriver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import wait_for
from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound, Timeout
from xend_actors.hypervisor.base import DomainChanged, LinuxImage, ShutdownReason
from xend_actors.hypervisor.ring.messages import (
    BlkifBeCreate,
    BlkifBeVbdCreate,
    BlkifBeVbdGrow,
    BlkifStatus,
    Extent,
    Shutdown,
    ShutdownSubtype,
    check,
)
from xend_actors.hypervisor.sim.driver import SimDriver
from xend_actors.hypervisor.sim.launch import ensure_simhv

pytestmark = pytest.mark.integration

IMAGE = LinuxImage("/boot/vmlinuz-2.6-xenU", "", "root=/dev/xvda1 ro")


@dataclass
class SimHome:
    """A short temporary folder for one xend-simhv: socket, pid file and log."""

    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "simhv.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "simhv.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "simhv.log"

    def ensure(self, memory_mb: int = 4096, cpus: int = 4) -> None:
        ensure_simhv(self.socket, memory_mb=memory_mb, cpus=cpus, log_file=self.log_file,
                     pid_file=self.pid_file)

    def pid(self) -> int:
        return int(self.pid_file.read_text())

    def stop(self) -> None:
        """SIGTERM the xend-simhv of this folder and wait until it has cleaned up."""
        try:
            pid = self.pid()
        except (FileNotFoundError, ValueError):
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not self.pid_file.exists(), timeout=10, what="xend-simhv to stop")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            raise


@pytest.fixture
def home() -> Iterator[SimHome]:
    home = SimHome(Path(tempfile.mkdtemp(prefix="simhv-")))
    try:
        yield home
    finally:
        home.stop()
        shutil.rmtree(home.root, ignore_errors=True)


@pytest.fixture
def simhv(home: SimHome) -> SimHome:
    home.ensure()
    return home


@pytest.fixture
def driver(simhv: SimHome) -> Iterator[SimDriver]:
    driver = SimDriver(simhv.socket)
    yield driver
    driver.close()


def running_domain(driver: SimDriver, name: str = "web") -> int:
    domid = driver.create(name, 128)
    driver.build(domid, IMAGE)
    driver.unpause(domid)
    return domid


def read_until(stream: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    """Read the stream until ``marker`` shows; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} within {timeout:g} s; got {bytes(data)!r}")
        stream.settimeout(left)
        try:
            chunk = stream.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"the stream ended before {marker!r}; got {bytes(data)!r}")
        data += chunk
    return bytes(data)


def test_a_domain_is_created_built_run_paused_and_destroyed(driver: SimDriver) -> None:
    free = driver.physinfo().free_memory_mb
    domid = driver.create("web", 256, vcpus=2)
    assert driver.domain(domid).state.letters == "--p--"
    assert driver.physinfo().free_memory_mb == free - 256
    driver.build(domid, IMAGE)
    driver.unpause(domid)
    listed = {d.domid: d for d in driver.list_domains()}
    assert listed[0].name == "Domain-0"
    assert (listed[domid].name, listed[domid].vcpus, listed[domid].memory_kb) == (
        "web", 2, 256 * 1024)
    assert listed[domid].state.letters == "-b---"
    driver.pause(domid)
    assert driver.domain(domid).state.letters == "--p--"
    driver.destroy(domid)
    assert domid not in [d.domid for d in driver.list_domains()]
    assert driver.physinfo().free_memory_mb == free


def test_a_watcher_hears_of_a_shutdown_asked_through_the_driver(driver: SimDriver) -> None:
    domid = running_domain(driver)
    heard: list[DomainChanged] = []
    driver.watch(heard.append)
    driver.shutdown(domid, ShutdownReason.REBOOT)
    wait_for(lambda: DomainChanged(domid) in heard, what="the shutdown event")
    info = driver.domain(domid)
    assert info.state.shutdown
    assert info.shutdown_reason is ShutdownReason.REBOOT


def test_the_console_shows_the_banner_and_answers_echo(driver: SimDriver) -> None:
    domid = driver.create("web", 128)
    driver.build(domid, IMAGE)
    with driver.open_console(domid) as console:
        driver.unpause(domid)
        banner = read_until(console, b"# ")
        assert b"Kernel command line: root=/dev/xvda1 ro" in banner
        console.sendall(b"echo hello\r")
        assert read_until(console, b"hello\r\n# ").endswith(b"echo hello\r\nhello\r\n# ")
        driver.destroy(domid)
        assert console.recv(65536) == b""  # the stream ends with the domain


def test_output_before_anyone_attached_comes_with_the_console(driver: SimDriver) -> None:
    domid = running_domain(driver)
    with driver.open_console(domid) as console:
        assert b"Kernel: /boot/vmlinuz-2.6-xenU" in read_until(console, b"# ")


def test_domains_outlive_the_driver(simhv: SimHome) -> None:
    first = SimDriver(simhv.socket)
    domid = running_domain(first, "survivor")
    first.close()
    second = SimDriver(simhv.socket)
    try:
        assert second.domain(domid).name == "survivor"
    finally:
        second.close()


def test_ensure_simhv_leaves_a_running_simhv_alone(simhv: SimHome, driver: SimDriver) -> None:
    pid = simhv.pid()
    domid = driver.create("kept", 128)
    simhv.ensure(memory_mb=9999)
    assert simhv.pid() == pid
    assert driver.physinfo().memory_mb == 4096
    assert driver.domain(domid).name == "kept"


def test_errors_come_back_as_the_matching_xend_errors(driver: SimDriver) -> None:
    domid = driver.create("web", 128)
    with pytest.raises(NotFound, match="no domain 999"):
        driver.domain(999)
    with pytest.raises(Conflict, match=f"domain id {domid} is in use"):
        driver.create("again", 128, domid=domid)
    with pytest.raises(Conflict, match="has not been built"):
        driver.unpause(domid)
    with pytest.raises(BadRequest, match="got 99"):
        driver.pincpu(domid, 99)
    with pytest.raises(HypervisorError, match="it needs 100000 MiB but only"):
        driver.create("huge", 100000)
    with pytest.raises(BadRequest, match="not a shutdown request"):
        driver.shutdown(domid, ShutdownReason.CRASH)


def test_calls_from_eight_threads_each_get_their_own_answers(driver: SimDriver) -> None:
    def worker(thread: int) -> list[tuple[str, str]]:
        answers = []
        for n in range(40):
            name = f"t{thread}-{n}"
            answers.append((name, driver.domain(driver.create(name, 1)).name))
        return answers

    with ThreadPoolExecutor(8) as pool:
        results = [answer for answers in pool.map(worker, range(8)) for answer in answers]
    assert len(results) == 320
    assert all(asked == got for asked, got in results)


def test_sigterm_stops_simhv_and_removes_its_socket_and_pid_file(simhv: SimHome) -> None:
    simhv.stop()
    assert not simhv.socket.exists()
    assert not simhv.pid_file.exists()


def test_a_lost_connection_fails_the_later_calls(simhv: SimHome, driver: SimDriver) -> None:
    simhv.stop()
    with pytest.raises(HypervisorError, match="lost the connection to xend-simhv"):
        driver.physinfo()


def test_bad_request_lines_get_errors_and_simhv_keeps_serving(simhv: SimHome) -> None:
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(simhv.socket))
        raw.settimeout(10)
        raw.sendall(b"not json\n" + b"x" * (2 << 20) + b"\n"
                    + b'{"id": 3, "call": "no_such_call"}\n'
                    + b'{"id": 4, "call": "domain", "args": {"domid": "zero"}}\n'
                    + b'{"id": 5, "call": "ping"}\n')
        with raw.makefile("rb") as replies:
            answers = [json.loads(replies.readline()) for _ in range(5)]
    assert [a["id"] for a in answers] == [None, None, 3, 4, 5]
    assert [a.get("error", {}).get("kind") for a in answers[:4]] == ["bad_request"] * 4
    assert answers[4]["ok"] == "xend-simhv"


def test_a_call_nobody_answers_times_out_naming_the_call(home: SimHome) -> None:
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(home.socket))
        silent.listen()
        driver = SimDriver(home.socket, timeout=0.2)
        try:
            with pytest.raises(Timeout, match=r"did not answer physinfo within 0\.2 s"):
                driver.physinfo()
        finally:
            driver.close()


def test_a_simhv_that_cannot_start_says_why(home: SimHome) -> None:
    with pytest.raises(HypervisorError, match="needs more than 512 MiB"):
        home.ensure(memory_mb=100)


def test_a_watch_runs_in_its_own_thread_while_calls_go_on(driver: SimDriver) -> None:
    seen = threading.Event()
    threads: list[str] = []

    def notify(change: DomainChanged) -> None:
        threads.append(threading.current_thread().name)
        driver.domain(change.domid)  # a watcher may call the driver back
        seen.set()

    driver.watch(notify)
    domid = running_domain(driver)
    assert seen.wait(10)
    assert threading.current_thread().name not in threads
    driver.destroy(domid)


def test_a_vbd_on_a_host_file_is_used_from_the_guest_console(
        driver: SimDriver, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 1024))  # 128 sectors
    domid = driver.create("disky", 128)
    driver.build(domid, IMAGE)
    device = driver.attach_backing(str(disk), readonly=False)
    assert driver.backings() == [(device, str(disk), False)]
    for request in (BlkifBeCreate(domid, 0), BlkifBeVbdCreate(domid, 0, 0x0301, 0),
                    BlkifBeVbdCreate(domid, 0, 0x0302, 1),
                    BlkifBeVbdGrow(domid, 0, 0x0301, Extent(0, 1 << 63, device)),
                    BlkifBeVbdGrow(domid, 0, 0x0302, Extent(0, 1 << 63, device))):
        answer = driver.send_control(0, request)
        assert answer == request  # an echo with status OKAY
        check(answer, "vbd")
    again = driver.send_control(0, BlkifBeCreate(domid, 0))
    assert again.status is BlkifStatus.INTERFACE_EXISTS  # type: ignore[attr-defined]
    driver.unpause(domid)
    with driver.open_console(domid) as console:
        read_until(console, b"# ")
        console.sendall(b"lsblk\r")
        listing = read_until(console, b"\r\n# ")
        assert b"0x0301           128         65536 rw" in listing
        assert b"0x0302           128         65536 ro" in listing
        console.sendall(b"disk 0x0301 write 512 written from the guest\r")
        assert b"wrote 22 bytes at 512" in read_until(console, b"512\r\n# ")
        console.sendall(b"disk 0x0302 read 512 22\r")
        assert b"written from the guest\r\n# " in read_until(console, b"guest\r\n# ")
        console.sendall(b"disk 0x0302 write 0 x\r")
        assert b"disk: write error: Read-only file system" in read_until(console, b"tem\r\n# ")
    assert disk.read_bytes()[512:534] == b"written from the guest"
    with pytest.raises(Conflict, match="in use by vbd"):
        driver.detach_backing(device)
    driver.destroy(domid)
    driver.detach_backing(device)
    assert driver.backings() == []


def test_shutdown_and_bad_frames_on_the_control_wire(driver: SimDriver, simhv: SimHome) -> None:
    domid = running_domain(driver)
    assert driver.send_control(domid, Shutdown(ShutdownSubtype.SYSRQ, "h")) == \
        Shutdown(ShutdownSubtype.SYSRQ, "h")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(simhv.socket))
        frame = bytes([6, 9, 0, 0]) + bytes(60)
        sock.sendall(json.dumps({"id": 1, "call": "control",
                                 "args": {"domid": domid, "frame": frame.hex()}}).encode() + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["error"] == {"kind": "bad_request",
                              "message": "unknown control message type 6 subtype 9"}
