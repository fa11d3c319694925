"""Save, restore and live migration of real guests under qemu through real xends.

A saved guest comes back from its file with its shell state (a variable set before the
save) and its disks, each in the PCI slot it had; a corrupt, a truncated and a sim
driver's file are refused and leave nothing; a file an earlier xend wrote (format
version 2, SHA-256) is still restored, and still refused when corrupt. A restore cut off
by a ``kill -9`` of xend (its qemu launched, recorded or not) leaves no domain, qemu, folder,
intent or session, and the file restores again. Two xends with
the qemu driver, each in a network namespace of its own joined by a veth pair (as
``tests/integration/test_migrate.py`` does for the sim), move a running guest live or
stopped: it answers on its console at the destination with its shell state, and the
source keeps no trace (no qemu, no domain, no session, no run-dir folder). A
destination killed mid-way (the
stream throttled so it lasts) leaves the guest running at the source; a source xend
killed mid-way runs its stopped guest again when it starts; a peer the destination does
not allow and a name it has are refused. Once the whole stream has gone, the guest may
run at the destination: the source runs it again only if the destination says it
failed, and stays paused if the destination goes without a word.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
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
    QEMU,
    QEMU_CONFIG,
    Guest,
    QemuXend,
    booted,
    console,
    process_gone,
    vm,
)
from tests.hosts import DESTINATION, SOURCE, Host, HostPairs
from tests.support.netns import netns_usable
from tests.support.ports import free_port
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from xend_actors import sxp
from xend_actors.transfer import savefile, xfr

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(QEMU is None,
                                 reason="qemu-system-x86_64 is not installed")]

# Runs one command in the guest's shell through a console port; its output is what comes
# between two markers the echo of the typed line cannot contain.
SHELL = r"""
import re, socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.sendall(b"printf 'B%sB\\n' 0; " + sys.argv[2].encode() + b"; printf 'E%sE\\n' 0\r")
seen, deadline = b"", time.monotonic() + 30
while (found := re.search(rb"B0B\r?\n(.*?)E0E", seen, re.S)) is None:
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    seen += sock.recv(4096)
print(found.group(1).decode().strip())
"""


def disk(folder: Path, name: str = "disk.img", size: int = 8 << 20) -> Path:
    path = folder / name
    with open(path, "wb") as f:
        f.write(b"DISK-" + name.encode())
        f.truncate(size)
    return path


def qemu_pids(run_dir: Path) -> list[int]:
    pids = []
    for state in (run_dir / "qemu").glob("*/state.json"):
        pid = int(re.search(rb'"pid": (\d+)', state.read_bytes()).group(1))  # type: ignore[union-attr]
        if pid and not process_gone(pid):
            pids.append(pid)
    return pids


# --- save and restore ----------------------------------------------------------------------


def test_save_and_restore_keep_the_shell_state_and_the_disk(
        qemu: QemuXend, tmp_path: Path) -> None:
    xend = qemu
    data = disk(tmp_path)
    info = xend.create_vm("s1", ["device", ["vbd", ["uname", f"file:{data}"], ["dev", "sda1"],
                                         ["mode", "w"]]])
    domid = int(sxp.child_value(info, "id"))
    pid = xend.qemu_pid(domid)
    with console(xend.console_port("s1")) as con:
        booted(con)
        con.run("MARK=kept-$((6*7)); echo SET-$MARK", rb"SET-kept-42")
        con.run("until [ -b /dev/vda ]; do sleep 0.2; done; echo HAVE-$((1))-VDA",
                rb"HAVE-1-VDA", 30)

    image = tmp_path / "s1.save"
    began = time.monotonic()
    reply = xend.op("s1", "save", file=str(image))
    saved = time.monotonic() - began
    assert reply.status_code == 200, reply.text
    assert "s1" not in xend.names()
    wait_for(lambda: process_gone(pid), what="the saved guest's qemu gone")
    assert not (xend.home.run_dir / "qemu" / str(domid)).exists()
    header = savefile.Reader(image, "qemu")
    header.finish()  # whole and its checksum good
    header.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    wait_for(lambda: any(e.startswith(f"xend.domain.save.progress (s1 {domid} (progress "
                                      "(phase save)") for e in xend.events.lines()),
             what="progress events of the save, from qemu's own count")

    began = time.monotonic()
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(image)})
    restored = time.monotonic() - began
    assert reply.status_code == 201, reply.text
    assert sxp.child_value(sxp.parse(reply.text), "name") == "s1"
    assert xend.state("s1") in ("r----", "-b---")
    wait_for(lambda: any(e.startswith("xend.domain.restore.progress (s1 ")
                         and "(phase restore)" in e for e in xend.events.lines()),
             what="progress events of the restore, from the file qemu reads")
    with console(xend.console_port("s1")) as con:
        con.run("echo GOT-$MARK-", rb"GOT-kept-42-", 30)
        con.run("head -c 13 /dev/vda; echo; echo READ-$((2))", rb"DISK-disk.img\s+READ-2")
    print(f"qemu save of a 128 MiB guest through xend: {saved:.3f} s, "
          f"{image.stat().st_size >> 20} MiB; restore: {restored:.3f} s")


def test_a_restored_guest_gets_its_devices_back_in_the_slots_they_had(
        qemu: QemuXend, tmp_path: Path) -> None:
    """After an unplug, replaying the config in order would put the remaining disk in
    another PCI slot than the saved state expects; the saved slots are kept."""
    xend = qemu
    first, second = disk(tmp_path, "first.img"), disk(tmp_path, "second.img")
    xend.create_vm("s4", ["device", ["vbd", ["uname", f"file:{first}"], ["dev", "sda1"],
                                  ["mode", "w"]]])
    with console(xend.console_port("s4")) as con:
        booted(con)
        config = sxp.show(["vbd", ["uname", f"file:{second}"], ["dev", "sdb"], ["mode", "w"]])
        created = xend.op("s4", "device_create", config=config)
        assert created.status_code == 200, created.text + xend.home.log_tail()
        con.run("until [ -b /dev/vdb ]; do sleep 0.2; done; echo TWO-$((2))", rb"TWO-2", 30)
        destroyed = xend.op("s4", "device_destroy", type="vbd", idx="0")
        assert destroyed.status_code == 200, destroyed.text + xend.home.log_tail()
        con.run("while [ -b /dev/vda ]; do sleep 0.2; done; echo ONE-$((1))", rb"ONE-1", 30)
    image = tmp_path / "s4.save"
    assert xend.op("s4", "save", file=str(image)).status_code == 200
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(image)})
    assert reply.status_code == 201, reply.text
    with console(xend.console_port("s4")) as con:
        con.run("head -c 15 /dev/vdb; echo; echo READ-$((3))", rb"DISK-second.img\s+READ-3")


def test_a_disk_plugged_in_after_the_create_is_plugged_in_again_before_the_state_loads(
        qemu: QemuXend, tmp_path: Path) -> None:
    """A domain created without devices loads its state while it is configured; one that
    got a disk since has it in its config, so the disk is plugged in first."""
    xend = qemu
    xend.create_vm("s5")
    added = disk(tmp_path, "added.img")
    with console(xend.console_port("s5")) as con:
        booted(con)
        config = sxp.show(["vbd", ["uname", f"file:{added}"], ["dev", "sda1"], ["mode", "w"]])
        created = xend.op("s5", "device_create", config=config)
        assert created.status_code == 200, created.text + xend.home.log_tail()
        con.run("until [ -b /dev/vda ]; do sleep 0.2; done; echo PLUGGED-$((5))", rb"PLUGGED-5",
                30)
    image = tmp_path / "s5.save"
    assert xend.op("s5", "save", file=str(image)).status_code == 200
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(image)})
    assert reply.status_code == 201, reply.text + xend.home.log_tail()
    with console(xend.console_port("s5")) as con:
        con.run("head -c 14 /dev/vda; echo; echo READ-$((5))", rb"DISK-added.img\s+READ-5")


def as_version_2(image: Path, into: Path) -> None:
    """``image`` rewritten as a xend of save format version 2 wrote it: no check field,
    SHA-256."""
    data = image.read_bytes()
    _magic, _version, driver, _check, info_size, meta_size, payload_size, _digest = \
        savefile.HEADER.unpack_from(data)
    body = data[savefile.HEADER.size:]
    into.write_bytes(savefile.HEADER_V2.pack(savefile.MAGIC, 2, driver, info_size, meta_size,
                                             payload_size, hashlib.sha256(body).digest())
                     + body)


def saved(xend: QemuXend, name: str, folder: Path, mark: str | None = None) -> Path:
    """Guest ``name`` created, booted, ``MARK`` set to ``mark`` in its shell (if given) and
    saved into ``folder``: the file."""
    xend.create_vm(name)
    with console(xend.console_port(name)) as con:
        booted(con)
        if mark is not None:
            con.run(f"MARK={mark}; echo SET-$MARK", f"SET-{mark}".encode())
    image = folder / f"{name}.save"
    assert xend.op(name, "save", file=str(image)).status_code == 200
    return image


def restored_with(xend: QemuXend, image: Path, name: str, mark: str) -> None:
    """``image`` restored, and its guest ``name``'s shell still has ``MARK`` = ``mark``."""
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(image)})
    assert reply.status_code == 201, reply.text + xend.home.log_tail()
    with console(xend.console_port(name)) as con:
        con.run("echo GOT-$MARK-", f"GOT-{mark}-".encode(), 30)


def test_a_file_an_earlier_xend_saved_with_sha256_is_restored_and_checked(
        qemu: QemuXend, tmp_path: Path) -> None:
    xend = qemu
    image = saved(xend, "s6", tmp_path, mark="old-6")
    old = tmp_path / "s6-v2.save"
    as_version_2(image, old)

    refused_corrupt(xend, old, tmp_path / "corrupt-v2.save", "SHA-256")

    restored_with(xend, old, "s6", "old-6")


def qemus_of(run_dir: Path) -> list[int]:
    """Every live qemu whose command line names ``run_dir``, recorded or not."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(run_dir).encode() in cmdline and \
                not process_gone(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def frozen_when(xend: QemuXend, seen: Callable[[], bool]) -> None:
    """Stop xend (SIGSTOP) the moment ``seen()`` holds, looking every half millisecond:
    it stands still where that moment found it, as a kill there would leave it."""
    pid = xend.home.pid()
    assert pid is not None
    deadline = time.monotonic() + 60
    while not seen():
        assert time.monotonic() < deadline, "what the restore makes never came"
        time.sleep(0.0005)
    os.kill(pid, signal.SIGSTOP)


@pytest.mark.parametrize("until", ["launched", "recorded"])
def test_a_restore_cut_off_by_a_kill_9_leaves_nothing_and_can_be_done_again(
        qemu_xend: Callable[..., QemuXend], tmp_path: Path, until: str) -> None:
    # The restore launches qemu as soon as the table holds the intent, and records its
    # session only once qemu is launched: a xend killed in between has only the intent
    # to go by. "launched": killed as the restore's first file appears in the run dir
    # (the next domain id being written, the domain's folder made, its qemu started with
    # its pid unrecorded: whichever the moment finds); "recorded": once the session
    # names the domain.
    xend = qemu_xend()  # of its own: it is killed
    image = saved(xend, "r1", tmp_path, mark="kept-20")
    folders = xend.home.run_dir / "qemu"
    before = {p.name for p in folders.iterdir()}

    def restore() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its xend is killed under it
            xend.http.post("/xend/domain/", data={"op": "restore", "file": str(image)})
    threading.Thread(target=restore, daemon=True).start()
    if until == "launched":
        frozen_when(xend, lambda: any(p.name not in before for p in folders.iterdir()))
    else:
        frozen_when(xend, lambda: xend.sessions() != [])
    xend.home.kill9()

    xend.start()
    assert xend.names() == ["Domain-0"]
    wait_for(lambda: qemus_of(xend.home.run_dir) == [], 30, "no qemu left")
    assert {p.name for p in folders.iterdir()} == before
    assert xend.sessions() == []
    assert list((xend.home.dbroot / "intent").iterdir()) == []
    restored_with(xend, image, "r1", "kept-20")


def test_a_corrupt_file_and_a_sim_file_are_refused_and_leave_nothing(
        qemu: QemuXend, tmp_path: Path) -> None:
    xend = qemu
    image = saved(xend, "s2", tmp_path)

    refused_corrupt(xend, image, tmp_path / "corrupt.save", "CRC-32")
    wait_for(lambda: not qemu_pids(xend.home.run_dir), what="no qemu left")
    assert not [p for p in (xend.home.run_dir / "qemu").iterdir() if p.name.isdigit()]

    truncated = tmp_path / "truncated.save"
    truncated.write_bytes(image.read_bytes()[:-4096])
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(truncated)})
    assert reply.status_code == 400 and "truncated" in reply.text, reply.text

    sim = tmp_path / "sim.save"
    savefile.write(sim, savefile.SaveImage(["domain", ["name", "s3"], ["config", vm(
        xend.guest, "s3")]], b"{}"))
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(sim)})
    assert reply.status_code == 400, reply.text
    assert "saved by the sim hypervisor driver; this xend runs the qemu driver" in reply.text
    assert xend.names() == ["Domain-0"]

    # The good file still restores.
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(image)})
    assert reply.status_code == 201, reply.text
    with console(xend.console_port("s2")) as con:
        con.run("echo BACK-$((3))", rb"BACK-3")


# --- migration between two hosts -----------------------------------------------------------


class QemuHost(Host):
    """A test host whose xend runs the qemu driver."""

    def __init__(self, address: str, extra: str = "") -> None:
        super().__init__(address, QEMU_CONFIG + extra)

    def create(self, guest: Guest, name: str) -> int:
        reply = self.post("/xend/domain/", op="create", config=sxp.show(vm(guest, name)))
        assert reply.status_code == 201, reply.text
        assert self.post(f"/xend/domain/{name}", op="unpause").status_code == 200
        return int(sxp.child_value(sxp.parse(reply.text), "id"))

    def sh(self, dom: str, command: str) -> str:
        port = sxp.child_value(sxp.child(self.info(dom), "console"), "console_port")
        done = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", SHELL,
                               str(port), command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def wait_booted(self, name: str) -> None:
        wait_for(lambda: b"]# " in self.screen(name), BOOT_TIMEOUT, f"{name} booted")



@pytest.fixture(scope="module")
def qemu_host_pairs(guest: Guest, reaper: Reaper) -> Iterator[HostPairs]:
    why = netns_usable()
    if why:
        pytest.skip(why)
    pairs = HostPairs(QemuHost, reaper)
    yield pairs
    pairs.close()


@pytest.fixture
def qemu_hosts(qemu_host_pairs: HostPairs) -> Iterator[Callable[..., tuple[QemuHost, QemuHost]]]:
    """The module's pair of qemu hosts: ``qemu_hosts(allow=...)`` → (source, destination)."""
    yield qemu_host_pairs.take  # type: ignore[misc]
    qemu_host_pairs.give_back()


def test_a_live_migration_moves_the_running_guest_and_leaves_no_trace(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]]) -> None:
    source, destination = qemu_hosts()
    old_id = source.create(guest, "q1")
    source.wait_booted("q1")
    assert source.sh("q1", "MARK=moved-$((6*7)); echo $MARK") == "moved-42"
    [pid] = qemu_pids(source.home.run_dir)

    began = time.monotonic()
    reply = source.post("/xend/domain/q1", op="migrate", destination=DESTINATION, live="1")
    took = time.monotonic() - began
    assert reply.status_code == 200, reply.text
    assert re.fullmatch(rf"http://{re.escape(DESTINATION)}:8002/xend/domain/\d+",
                        str(sxp.parse(reply.text))), reply.text

    # Gone from the source's listing by the reply; torn down (its qemu's exit, its
    # files, the session) just after it.
    assert "q1" not in source.names()
    assert destination.sh("q1", "echo $MARK-there") == "moved-42-there"
    wait_for(lambda: process_gone(pid) and source.sessions() == [], 10,
             "the source's qemu to exit and its session to go")
    assert qemu_pids(source.home.run_dir) == []
    assert destination.sessions() == []
    assert not (source.home.dbroot / "domain" / str(old_id)).exists()
    assert not (source.home.run_dir / "qemu" / str(old_id)).exists()
    [ok] = [e for e in source.events() if e.startswith(f"xend.domain.migrate (q1 {old_id} ok")]
    downtime = float(re.search(r"\(downtime ([0-9.]+)\)", ok).group(1))  # type: ignore[union-attr]
    assert any(e.startswith("xend.domain.migrate.progress (q1 ") for e in source.events())
    print(f"qemu live migration through two xends: {took:.3f} s, downtime {downtime:.3f} s")


def test_a_migration_that_is_not_live_stops_first_and_keeps_the_shell(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]]) -> None:
    source, destination = qemu_hosts()
    source.create(guest, "q4")
    source.wait_booted("q4")
    assert source.sh("q4", "MARK=still-$((6*7)); echo $MARK") == "still-42"
    reply = source.post("/xend/domain/q4", op="migrate", destination=DESTINATION, live="0")
    assert reply.status_code == 200, reply.text
    assert "q4" not in source.names()
    assert destination.sh("q4", "echo $MARK-there") == "still-42-there"
    wait_for(lambda: qemu_pids(source.home.run_dir) == [], 10, "the source's qemu to exit")
    progress = [e for e in source.events() if e.startswith("xend.domain.migrate.progress")]
    assert progress and not any("(phase precopy)" in e for e in progress), progress


def test_a_guest_with_a_disk_migrates_with_it_plugged_in_before_its_state_loads(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]],
        tmp_path: Path) -> None:
    """A domain with a device is configured before its state flows (qemu must have the
    device when it loads); one without loads while it is configured (the tests above)."""
    source, destination = qemu_hosts()
    image = disk(tmp_path, "moving.img")
    config = vm(guest, "q6", ["device", ["vbd", ["uname", f"file:{image}"], ["dev", "sda1"],
                                        ["mode", "w"]]])
    reply = source.post("/xend/domain/", op="create", config=sxp.show(config))
    assert reply.status_code == 201, reply.text
    assert source.post("/xend/domain/q6", op="unpause").status_code == 200
    source.wait_booted("q6")
    reply = source.post("/xend/domain/q6", op="migrate", destination=DESTINATION, live="1")
    assert reply.status_code == 200, reply.text
    assert "q6" not in source.names()
    # Read first there: from the destination's qemu, not the guest's cache.
    assert destination.sh("q6", "head -c 15 /dev/vda; echo") == "DISK-moving.img"


def test_a_name_the_destination_has_is_refused(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]]) -> None:
    source, destination = qemu_hosts()
    source.create(guest, "q5")
    destination.create(guest, "q5")
    source.wait_booted("q5")
    reply = source.post("/xend/domain/q5", op="migrate", destination=DESTINATION, live="1")
    assert reply.status_code == 409, reply.text
    assert "vm name clash: q5" in reply.text
    assert source.sh("q5", "echo here-$((1+1))") == "here-2"
    assert len(qemu_pids(destination.home.run_dir)) == 1


def test_killing_the_destination_mid_way_leaves_the_guest_running_at_the_source(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]]) -> None:
    source, destination = qemu_hosts()
    source.create(guest, "q2")
    source.wait_booted("q2")
    assert source.sh("q2", "MARK=stays-$((6*7)); echo $MARK") == "stays-42"
    replies: list[httpx.Response] = []
    # 40 Mbit/s: the ~90 MiB stream would take ~20 s.
    migrating = threading.Thread(target=lambda: replies.append(source.post(
        "/xend/domain/q2", op="migrate", destination=DESTINATION, live="1", resource="40")))
    migrating.start()

    def midway() -> bool:
        sent = [int(n) for n in re.findall(r"migrate\.progress \(q2 \d+ \(progress \(phase \w+\) "
                                           r"\(sent (\d+)\)", "\n".join(source.events()))]
        return bool(sent) and max(sent) > 4 << 20
    wait_for(midway, timeout=60, what="the transfer under way")
    dest_qemus = qemu_pids(destination.home.run_dir)
    assert len(dest_qemus) == 1
    destination.kill_xend()
    migrating.join(timeout=90)
    [reply] = replies
    assert reply.status_code >= 500, reply.text
    assert "migrate failed" in reply.text

    assert "q2" in source.names()
    assert sxp.child_value(source.info("q2"), "state") in ("-b---", "r----")
    assert source.sh("q2", "echo $MARK-still-here") == "stays-42-still-here"
    assert source.sessions() == []
    # The destination's qemu lost its stream and went; a new xend there finds nothing.
    wait_for(lambda: all(process_gone(p) for p in dest_qemus), 30, "the half-made qemu gone")
    destination.start()
    assert destination.names() == ["Domain-0"]
    assert destination.sessions() == []


def test_a_peer_the_destination_does_not_allow_is_refused(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]]) -> None:
    source, destination = qemu_hosts(allow=r"10\.9\.9\.9")
    source.create(guest, "q3")
    source.wait_booted("q3")
    reply = source.post("/xend/domain/q3", op="migrate", destination=DESTINATION, live="1")
    assert reply.status_code == 403, reply.text
    assert f"{SOURCE} is not allowed to migrate here" in reply.text
    assert source.sh("q3", "echo still-$((1+1))") == "still-2"
    assert destination.names() == ["Domain-0"]
    assert qemu_pids(destination.home.run_dir) == []


def test_a_source_xend_killed_mid_way_runs_its_stopped_guest_again_when_it_starts(
        guest: Guest, qemu_hosts: Callable[..., tuple[QemuHost, QemuHost]]) -> None:
    source, destination = qemu_hosts()
    source.create(guest, "q6")
    source.wait_booted("q6")
    assert source.sh("q6", "MARK=back-$((6*7)); echo $MARK") == "back-42"
    # Not live, so the guest is stopped while its state goes (40 Mbit/s: ~20 s).

    def migrate() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its xend is killed under it
            source.post("/xend/domain/q6", op="migrate", destination=DESTINATION, live="0",
                        resource="40")
    threading.Thread(target=migrate, daemon=True).start()
    wait_for(lambda: any("(phase stopcopy) (sent" in e and "(sent 0)" not in e
                         for e in source.events()), 60, "the stream under way")
    source.kill_xend()
    wait_for(lambda: destination.names() == ["Domain-0"], 60, "the destination gave up")
    source.start()
    assert source.sessions() == []
    assert sxp.child_value(source.info("q6"), "state") in ("-b---", "r----")
    assert source.sh("q6", "echo $MARK-again") == "back-42-again"


# --- the end of the stream: the destination may run the guest from there --------------------


class ScriptedDestination:
    """A relocation port on 127.0.0.1 (plain TCP) that takes a qemu domain's whole
    stream, then ends as ``then`` says: ``"refuse"`` answers ``(xfr.err ...)`` (it
    failed and made nothing run), ``"vanish"`` closes without a word."""

    def __init__(self, then: str) -> None:
        self.then = then
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.got: list[int] = []  # bytes of state taken, once its end came (a guest
        # just launched has little but zero pages: a megabyte or so)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        channel = xfr.Channel(sock, "the source", 60)
        try:
            assert isinstance(channel.receive(), xfr.Hello)
            channel.send(xfr.OK)
            assert isinstance(channel.receive(), xfr.Xfr)
            channel.send(xfr.OK)  # "the machine is made": the stream may come
            total = 0
            while (piece := channel.receive()) != xfr.Data(0):
                assert isinstance(piece, xfr.Data), piece
                total += len(channel.receive_bytes(piece.size))
            self.got.append(total)
            if self.then == "refuse":
                channel.send(xfr.Err(xfr.Code.EIO, "qemu could not load it"))
                channel.receive()  # until the source hangs up
        except xfr.XfrError:
            pass
        finally:
            channel.close()
            self.listener.close()


@pytest.mark.parametrize("then", ["refuse", "vanish"])
def test_after_the_whole_stream_the_source_runs_again_only_if_the_destination_says_it_failed(
        qemu_xend: Callable[..., QemuXend], then: str) -> None:
    """Once its whole state has gone, the guest may run at the destination: a
    destination that says it failed gets the guest running again at the source; one
    that goes without a word leaves it paused there, neither run nor destroyed, so it
    runs at most once and is not lost."""
    xend = qemu_xend("(qemu-accel tcg)\n(xend-relocation-tls no)\n")
    xend.create_vm("e1")
    assert xend.state("e1") in ("r----", "-b---")
    peer = ScriptedDestination(then)
    reply = xend.op("e1", "migrate", destination=f"127.0.0.1:{peer.port}", live="1")
    peer.thread.join(timeout=60)
    assert peer.got and peer.got[0] > 0, "the destination took the whole stream, to its end"
    assert reply.status_code == 502, reply.text
    assert xend.sessions() == []
    if then == "refuse":
        assert "could not load the domain: qemu could not load it" in reply.text
        wait_for(lambda: xend.state("e1") in ("r----", "-b---"), what="e1 running again")
    else:
        assert re.search(r"domain \d+ stays paused here: .* has all of its state but did "
                         r"not say whether it runs it", reply.text), reply.text
        assert xend.state("e1") == "--p--"
        assert len(qemu_pids(xend.home.run_dir)) == 1


def refused_corrupt(xend: QemuXend, image: Path, corrupt: Path, check: str) -> None:
    """A copy of ``image`` with a byte flipped mid-way is refused by its ``check`` and
    leaves no domain."""
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x55
    corrupt.write_bytes(bytes(data))
    reply = xend.http.post("/xend/domain/", data={"op": "restore", "file": str(corrupt)})
    assert reply.status_code == 400, reply.text
    assert f"corrupt: its {check} checksum does not match" in reply.text
    assert xend.names() == ["Domain-0"]


# --- the stream flows before the destination's qemu is up -----------------------------------

# Stands in for qemu at a destination that cannot run the guest: a qemu launched to take
# a state in starts, says so, and fails a second later; any other runs the real one.
FAILING_QEMU = """#!/bin/sh
case " $* " in
*" -incoming "*) echo "started" > "{mark}"; sleep 1; echo "no room for this guest" >&2; exit 1;;
esac
exec {qemu} "$@"
"""


def pipes_of(pid: int) -> int:
    """How many pipe ends process ``pid`` holds open."""
    with os.scandir(f"/proc/{pid}/fd") as fds:
        return sum(1 for fd in fds if os.readlink(fd.path).startswith("pipe:"))


def test_a_destination_whose_qemu_fails_while_the_state_flows_leaves_nothing_and_the_source_runs(
        qemu_xend: Callable[..., QemuXend], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A destination answers a qemu domain's offer at once, and the source's state flows
    into a bounded pipe there while the destination's qemu starts. When that qemu fails,
    the destination frees that pipe and leaves no domain, qemu or session; the source,
    which was streaming, gets its guest running again with its shell state."""
    source = qemu_xend("(qemu-accel tcg)\n(xend-relocation-tls no)\n")
    bin_dir, mark = tmp_path / "bin", tmp_path / "started"
    bin_dir.mkdir()
    wrapper = bin_dir / "qemu-system-x86_64"
    wrapper.write_text(FAILING_QEMU.format(mark=mark, qemu=QEMU))
    wrapper.chmod(0o755)
    port = free_port()
    with monkeypatch.context() as patched:  # its xend finds the stand-in first
        patched.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        destination = qemu_xend("(qemu-accel tcg)\n(xend-relocation-tls no)\n"
                                "(xend-relocation-server yes)\n"
                                f"(xend-relocation-port {port})\n"
                                "(xend-relocation-address 127.0.0.1)\n")
    source.create_vm("f1")
    with console(source.console_port("f1")) as con:
        booted(con)
        con.run("MARK=kept-$((6*7)); echo SET-$MARK", rb"SET-kept-42")
    xend_pid = destination.home.pid()
    assert xend_pid is not None
    pipes = pipes_of(xend_pid)
    since = source.events.mark()

    reply = source.op("f1", "migrate", destination=f"127.0.0.1:{port}", live="1")

    assert reply.status_code == 502, reply.text
    assert "no room for this guest" in reply.text, reply.text
    assert mark.exists(), "the destination launched its qemu"
    sent = [int(n) for n in re.findall(r"xend\.domain\.migrate\.progress \(f1 \d+ \(progress "
                                       r"\(phase precopy\) \(sent (\d+)\)",
                                       "\n".join(source.events.lines(since)))]
    assert sent and max(sent) > 0, "the state flowed before the destination's qemu failed"
    wait_for(lambda: source.state("f1") in ("r----", "-b---"), what="f1 running again")
    assert source.sessions() == []
    assert destination.names() == ["Domain-0"]
    assert destination.sessions() == []
    assert qemu_pids(destination.home.run_dir) == []
    wait_for(lambda: pipes_of(xend_pid) == pipes, 10, "the destination's pipe closed")
    with console(source.console_port("f1")) as con:
        con.run("echo STILL-$MARK-", rb"STILL-kept-42-", 30)
