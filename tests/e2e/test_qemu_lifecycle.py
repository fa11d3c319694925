"""Real guests under qemu through a real xend: boot, console, pause, shutdowns, reboot,
crashes and restart modes, and a xend killed and started again.

The tests share one xend (``(hypervisor qemu)``, the ``qemu`` fixture) in a folder under
/tmp, each booting the test guest that ``tests/guest/build`` makes (a Debian cloud kernel
and a busybox initramfs with a shell on ttyS0 and the control agent) and reaching it
through xend's console port and HTTP, as a user would; the test that kills xend has one
of its own. Under TCG on 2 cores a boot takes ~4 s, so guests are few and every wait is a
condition with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.qemu import QEMU, ROOT, Guest, QemuXend, booted, console, process_gone, vm
from tests.support.processes import wait_for
from xend_actors import sxp

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed "
                                 "(apt-get install qemu-system-x86)")]


# --- the tests ---------------------------------------------------------------------------------


def test_boot_to_the_prompt_answer_a_command_and_pause(qemu: QemuXend) -> None:
    xend = qemu
    began = time.monotonic()
    info = xend.create_vm("q1")
    domid = int(sxp.child_value(info, "id"))
    with console(xend.console_port("q1")) as con:
        booted(con)
        boot_seconds = time.monotonic() - began
        print(f"xm create → prompt through xend: {boot_seconds:.2f} s")
        con.run("echo ANSWER-$((40+2))", rb"ANSWER-42")
        assert xend.state("q1") in ("r----", "-b---")
        assert not process_gone(xend.qemu_pid(domid))

        before = con.uptime()
        xend.do("q1", "pause")
        assert xend.state("q1") == "--p--"
        paused_at = time.monotonic()
        con.type("echo PAUSED-$((1+1))")
        assert con.silent(rb"PAUSED-2", 2.0), "a paused guest answered"
        xend.do("q1", "unpause")
        con.expect(rb"PAUSED-2", 30)
        wall = time.monotonic() - paused_at
        guest = con.uptime() - before
        assert guest < wall - 1.5, f"the guest's clock ran while paused: {guest} of {wall} s"
        assert xend.state("q1") in ("r----", "-b---")


def test_shutdown_poweroff_and_halt_end_the_domains(qemu: QemuXend) -> None:
    xend = qemu
    off_id = sxp.child_value(xend.create_vm("off"), "id")
    halted_id = sxp.child_value(xend.create_vm("halted", ["restart", "always"]), "id")
    with console(xend.console_port("off")) as off, console(xend.console_port("halted")) as halted:
        booted(off)
        booted(halted)
        pids = {name: xend.qemu_pid(int(sxp.child_value(xend.info(name), "id")))
                for name in ("off", "halted")}
        xend.do("off", "shutdown", reason="poweroff")
        xend.do("halted", "shutdown", reason="halt")  # never restarts, even under always
        xend.wait_event(f"xend.domain.exit (off {off_id} poweroff)")
        xend.wait_event(f"xend.domain.exit (halted {halted_id} poweroff)")
        wait_for(lambda: set(xend.names()) == {"Domain-0"}, 30, "both domains gone")
        assert off.expect(rb"Power down", 10)
    for pid in pids.values():
        wait_for(lambda pid=pid: process_gone(pid), 10, f"qemu {pid} gone")
    assert f"xend.domain.restart (halted {halted_id} begin)" not in xend.events.lines()
    assert not list((xend.home.run_dir / "qemu").glob("*/state.json"))


def test_reboot_relaunches_qemu_and_keeps_the_console(qemu: QemuXend) -> None:
    xend = qemu
    domid = sxp.child_value(xend.create_vm("rb"), "id")
    first = xend.qemu_pid(domid)
    with console(xend.console_port("rb")) as con:
        booted(con)
        con.run("echo BEFORE-$((1+2))", rb"BEFORE-3")
        began = time.monotonic()
        xend.do("rb", "shutdown", reason="reboot")
        con.expect(rb"Restarting system", 30)
        seconds = booted(con)  # the same connection sees the new boot
        print(f"reboot → prompt on the kept console: {time.monotonic() - began:.2f} s "
              f"(boot {seconds:.2f} s)")
        con.run("echo AFTER-$((2+3))", rb"AFTER-5")
    assert xend.qemu_pid(domid) != first
    assert process_gone(first)
    assert sxp.child_value(xend.info("rb"), "id") == domid
    for line in (f"xend.domain.exit (rb {domid} reboot)",
                 f"xend.domain.restart (rb {domid} success)"):
        assert line in xend.events.lines()


def test_a_guest_reboot_from_inside_restarts_it(qemu: QemuXend) -> None:
    xend = qemu
    domid = sxp.child_value(xend.create_vm("inside"), "id")
    with console(xend.console_port("inside")) as con:
        booted(con)
        con.type("reboot -f")
        booted(con)  # the same console connection sees the new boot
    xend.wait_event(f"xend.domain.restart (inside {domid} success)")
    assert f"xend.domain.exit (inside {domid} reboot)" in xend.events.lines()
    assert sxp.child_value(xend.info("inside"), "id") == domid


@pytest.mark.parametrize("mode", ["never", "always"])
def test_a_crash_is_handled_per_restart_mode(qemu: QemuXend, mode: str) -> None:
    xend = qemu
    domid = sxp.child_value(xend.create_vm("crashy", ["restart", mode]), "id")
    first = xend.qemu_pid(domid)
    with console(xend.console_port("crashy")) as con:
        booted(con)
        xend.do("crashy", "shutdown", reason="sysrq", key="c")
        xend.wait_event(f"xend.domain.exit (crashy {domid} crash)")
        if mode == "never":
            wait_for(lambda: "crashy" not in xend.names(), 30, "the crashed domain gone")
            wait_for(lambda: process_gone(first), 10, "its qemu gone")
        else:
            xend.wait_event(f"xend.domain.restart (crashy {domid} success)")
            booted(con)
            con.run("echo AGAIN-$((3+4))", rb"AGAIN-7")
            assert xend.qemu_pid(domid) != first


def test_a_qemu_killed_from_outside_is_a_crash(qemu: QemuXend) -> None:
    xend = qemu
    domid = sxp.child_value(xend.create_vm("victim", ["restart", "never"]), "id")
    pid = xend.qemu_pid(domid)
    os.kill(pid, signal.SIGKILL)
    xend.wait_event(f"xend.domain.exit (victim {domid} crash)")
    wait_for(lambda: "victim" not in xend.names(), 30, "the domain gone")


def test_kill_9_of_xend_leaves_guests_running_and_a_new_xend_adopts_them(
    qemu_xend: Callable[..., QemuXend],
) -> None:
    xend = qemu_xend()  # of its own: it is killed
    xend.create_vm("keeper")
    xend.create_vm("offline")
    xend.create_vm("killed")
    ports = {name: xend.console_port(name) for name in ("keeper", "offline", "killed")}
    for port in ports.values():
        with console(port) as con:
            booted(con)
    pids = {domid: xend.qemu_pid(domid) for domid in (1, 2, 3)}

    xend.home.kill9()
    assert xend.home.xend("status").returncode == 3
    assert not any(process_gone(pid) for pid in pids.values()), "a guest died with xend"
    # While xend is away: one guest powers itself off, another's qemu is killed.
    with socket.socket(socket.AF_UNIX) as serial:
        serial.connect(str(xend.home.run_dir / "qemu" / "2" / "console.sock"))
        serial.sendall(b"\npoweroff -f\n")
        wait_for(lambda: b"qemu_system_shutdown_request" in
                 (xend.home.run_dir / "qemu" / "2" / "qemu.trace").read_bytes(), 30,
                 "the offline guest powered off")
    os.kill(pids[3], signal.SIGKILL)

    xend.start()
    xend.wait_event("xend.domain.exit (offline 2 poweroff)")
    xend.wait_event("xend.domain.exit (killed 3 crash)")
    wait_for(lambda: xend.names() == ["Domain-0", "keeper"], 30, "only keeper left")
    assert xend.qemu_pid(1) == pids[1]
    with console(ports["keeper"]) as con:
        con.run("echo ADOPTED-$((5+6))", rb"ADOPTED-11")
        xend.do("keeper", "pause")
        assert xend.state("keeper") == "--p--"
        xend.do("keeper", "unpause")
        con.run("echo STILL-$((6+6))", rb"STILL-12")
        xend.do("keeper", "shutdown", reason="poweroff")
        xend.wait_event("xend.domain.exit (keeper 1 poweroff)")
    wait_for(lambda: process_gone(pids[1]), 10, "keeper's qemu gone")


def test_a_qemu_launched_but_not_recorded_when_xend_was_killed_is_killed_at_its_start(
    qemu_xend: Callable[..., QemuXend],
) -> None:
    # Found by bench/torture.py --qemu: a xend killed between launching a domain's qemu
    # and writing its pid left the state "never built"; the next xend removed the folder
    # and the qemu ran on, an orphan nobody listed. Here the state is put back to what
    # that moment leaves: the qemu runs, its state names no pid.
    xend = qemu_xend()  # of its own: it is killed
    domid = sxp.child_value(xend.create_vm("unrecorded", start=False), "id")
    pid = xend.qemu_pid(domid)
    xend.home.kill9()
    state = xend.state_file(domid)
    recorded = json.loads(state.read_text())
    state.write_text(json.dumps({**recorded, "pid": 0, "started": 0, "image": None}))

    xend.start()
    wait_for(lambda: process_gone(pid), 30, "the unrecorded qemu killed")
    assert "unrecorded" not in xend.names()
    assert not state.parent.exists()
    assert f"Killed qemu {pid} of domain {domid}, launched but never recorded" in \
        xend.home.logfile.read_text()


def test_a_run_dir_folder_whose_state_was_never_written_is_removed_at_the_start(
    qemu_xend: Callable[..., QemuXend],
) -> None:
    # Found by bench/torture.py --qemu: a xend killed between making a new domain's folder
    # and writing its state left the folder, which every later start left alone.
    xend = qemu_xend()  # of its own: it is killed
    xend.home.kill9()
    folder = xend.home.run_dir / "qemu" / "77"
    folder.mkdir(mode=0o700)

    xend.start()
    assert not folder.exists()
    assert f"Removed {folder}: a create cut off before its state was written" in \
        xend.home.logfile.read_text()


def test_a_qemu_launched_before_its_state_was_written_is_killed_at_the_next_start(
    qemu_xend: Callable[..., QemuXend],
) -> None:
    # A create launches qemu before the domain's state is written (the state names the
    # qemu): a xend killed in between leaves a folder without one and a qemu running
    # from it. Here the state is taken away again to leave what that moment leaves.
    xend = qemu_xend()  # of its own: it is killed
    domid = sxp.child_value(xend.create_vm("stateless", start=False), "id")
    pid = xend.qemu_pid(domid)
    xend.home.kill9()
    state = xend.state_file(domid)
    state.unlink()

    xend.start()
    wait_for(lambda: process_gone(pid), 30, "the qemu launched without a state killed")
    assert "stateless" not in xend.names()
    assert not state.parent.exists()
    assert f"Killed qemu {pid} of {state.parent}, launched but never recorded" in \
        xend.home.logfile.read_text()
    xend.create_vm("stateless", start=False)  # its name is free
    xend.destroy_all_but({"Domain-0"})


def test_a_kernel_that_cannot_be_read_fails_the_create_and_leaves_nothing(
    qemu: QemuXend, guest: Guest,
) -> None:
    xend = qemu
    config = vm(guest, "nokernel", kernel="/nonexistent/vmlinuz")
    reply = xend.http.post("/xend/domain/", data={"op": "create", "config": sxp.show(config)})
    assert reply.status_code == 500
    assert "kernel /nonexistent/vmlinuz: No such file or directory" in reply.text
    assert xend.names() == ["Domain-0"]
    assert not list((xend.home.run_dir / "qemu").glob("[0-9]*"))


def test_a_kernel_qemu_cannot_load_fails_the_create_with_its_reason_and_leaves_nothing(
    qemu: QemuXend, guest: Guest, tmp_path: Path,
) -> None:
    # qemu loads the kernel after its sockets listen, while xend already opens the
    # console: the create still waits for it and says why it failed.
    xend = qemu
    bad = tmp_path / "vmlinuz"
    bad.write_bytes(b"not a kernel")
    config = vm(guest, "badkernel", kernel=str(bad))
    reply = xend.http.post("/xend/domain/", data={"op": "create", "config": sxp.show(config)})
    assert reply.status_code == 500, reply.text
    assert "qemu exited with status 1 at launch" in reply.text, reply.text
    assert "linux kernel too old to load a ram disk" in reply.text, reply.text  # qemu said
    assert xend.names() == ["Domain-0"]
    assert not list((xend.home.run_dir / "qemu").glob("[0-9]*"))
    # its record, written while qemu started, was never put in place, and is gone too
    assert [p.name for p in (xend.home.dbroot / "domain").iterdir()] == ["0"]  # Domain-0's
    assert not list((xend.home.dbroot / "intent").iterdir())
    assert xend.consoles() == []  # the console opened meanwhile is closed again
    xend.create_vm("q-after", start=False)  # nothing of it is in the way of the next one
    xend.destroy_all_but({"Domain-0"})


EXAMPLE = ROOT / "etc" / "examples" / "qemu-domain.sxp"


def test_the_shipped_example_with_xm(qemu: QemuXend, guest: Guest) -> None:
    linux = sxp.child_value(sxp.parse(EXAMPLE.read_text()), "image")
    example_kernel = str(sxp.child_value(linux, "kernel"))
    if Path(example_kernel).resolve() != Path(guest.kernel).resolve():
        pytest.skip(f"the example names {example_kernel}; this build went to {guest.kernel}")
    xend = qemu
    xm = shutil.which("xm", path=os.path.dirname(sys.executable))
    assert xm is not None
    env = {**os.environ, "XEND_UNIX_PATH": str(xend.home.unix_path)}

    def run(*args: str) -> str:
        done = subprocess.run([xm, *args], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    assert run("create", "-F", str(EXAMPLE)).startswith("Started domain qemu1")
    with console(xend.console_port("qemu1")) as con:
        booted(con)
        listed = run("list", "qemu1").splitlines()[-1].split()
        assert listed[:3] == ["qemu1", xend.domid("qemu1"), "128"]
        run("shutdown", "-w", "qemu1")
    assert "qemu1" not in run("list")


def test_without_its_agent_a_guest_is_powered_off_through_acpi(
    qemu: QemuXend,
) -> None:
    xend = qemu
    domid = sxp.child_value(xend.create_vm("noagent", ["restart", "never"]), "id")
    with console(xend.console_port("noagent")) as con:
        booted(con)
        # init respawns the agent: make it one that never opens the control port.
        con.run("printf '#!/bin/sh\\nexec sleep 100000\\n' > /sbin/xend-agent; "
                "killall xend-agent; echo GONE-$((4+4))", rb"GONE-8")
        xend.do("noagent", "shutdown", reason="poweroff")
        xend.wait_event(f"xend.domain.exit (noagent {domid} poweroff)")
    dmesg = xend.http.get("/xend/node/dmesg").text
    assert f"domain {domid}: ACPI power button pressed (poweroff)" in dmesg
