"""Real guests under qemu through a real xend: boot, console, pause, shutdowns, reboot,
crashes and restart modes, and a xend killed and started again.

Every test runs its own xend (``(hypervisor qemu)``) in a folder under /tmp, boots the
test guest that ``tests/guest/build`` makes (a Debian cloud kernel and a busybox
initramfs with a shell on ttyS0 and the control agent) and reaches it through xend's
console port and HTTP, as a user would. Under TCG on 2 cores a boot takes ~4 s, so
guests are few and every wait is a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import XendHome, new_home, wait_for
from xend_actors import sxp

ROOT = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-system-x86_64")
PROMPT = b"]# "
BOOT_TIMEOUT = 90.0  # a TCG boot takes ~4 s alone; the suite may share the cpus
MEMORY = "128"  # this kernel needs at least 80 MiB

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed "
                                 "(apt-get install qemu-system-x86)")]


@dataclass(frozen=True)
class Guest:
    kernel: str
    ramdisk: str


@pytest.fixture(scope="session")
def guest() -> Guest:
    """The test guest, built (or found in its cache) by tests/guest/build."""
    build = ROOT / "tests" / "guest" / "build"
    done = subprocess.run([sys.executable, str(build), "--quiet"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"tests/guest/build failed: {done.stderr}"
    paths = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    return Guest(paths["kernel"], paths["ramdisk"])


def vm(guest: Guest, name: str, *extra: sxp.Value, kernel: str | None = None,
       args: str = "") -> sxp.Value:
    return ["vm", ["name", name], ["memory", MEMORY],
            ["image", ["linux", ["kernel", kernel or guest.kernel], ["ramdisk", guest.ramdisk],
                       ["args", f"quiet loglevel=3 {args}".strip()]]], *extra]


# --- a xend running qemu ---------------------------------------------------------------------


class Xend:
    """One xend with the qemu driver, spoken to over HTTP."""

    def __init__(self, home: XendHome, guest: Guest) -> None:
        self.home = home
        self.guest = guest
        self.http = home.http()

    def start(self) -> None:
        started = self.home.xend("start")
        assert started.returncode == 0, started.stderr + self.log_tail()
        self.http.close()
        self.http = self.home.http()

    def create(self, name: str, *extra: sxp.Value, start: bool = True,
               args: str = "") -> sxp.Value:
        config = vm(self.guest, name, *extra, args=args)
        reply = self.http.post("/xend/domain/", data={"op": "create",
                                                      "config": sxp.show(config)})
        assert reply.status_code == 201, reply.text
        if start:
            self.ok(name, "unpause")
        return sxp.parse(reply.text)

    def op(self, dom: str, op: str, **fields: str) -> httpx.Response:
        return self.http.post(f"/xend/domain/{dom}", data={"op": op, **fields})

    def ok(self, dom: str, op: str, **fields: str) -> None:
        reply = self.op(dom, op, **fields)
        assert reply.status_code in (200, 202), reply.text

    def info(self, dom: str) -> sxp.Value:
        reply = self.http.get(f"/xend/domain/{dom}")
        assert reply.status_code == 200, reply.text
        return sxp.parse(reply.text)

    def state(self, dom: str) -> str:
        return sxp.child_value(self.info(dom), "state")

    def names(self) -> list[str]:
        reply = self.http.get("/xend/domain/")
        assert reply.status_code == 200, reply.text
        return sxp.parse(reply.text)

    def console_port(self, dom: str) -> int:
        return int(sxp.child_value(sxp.child(self.info(dom), "console"), "console_port"))

    def events(self) -> list[str]:
        return re.findall(r"EVENT> (.*)$", self.home.logfile.read_text(), re.MULTILINE)

    def wait_event(self, line: str, timeout: float = 30.0) -> None:
        try:
            wait_for(lambda: line in self.events(), timeout, f"event {line}")
        except AssertionError as error:
            raise AssertionError(f"{error}; the log ends:\n{self.log_tail()}") from None

    def qemu_pid(self, domid: int) -> int:
        return int(json.loads(self.state_file(domid).read_text())["pid"])

    def state_file(self, domid: int) -> Path:
        return self.home.run_dir / "qemu" / str(domid) / "state.json"

    def xend_pid(self) -> int:
        return int(self.home.pid_file.read_text().split()[0])

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.home.logfile.read_text()[-3000:]
        return ""


def kill_guests(run_dir: Path) -> None:
    """Kill every qemu a test's xend left (they outlive xend on purpose)."""
    for state in (run_dir / "qemu").glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(state.read_text())["pid"])
            if pid and "qemu" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def qemu_xend(guest: Guest) -> Iterator[Callable[..., Xend]]:
    """A factory of started xends with the qemu driver; all stopped, guests killed after."""
    made: list[Xend] = []

    def make(extra: str = "(qemu-accel tcg)\n") -> Xend:
        xend = Xend(new_home("(hypervisor qemu)\n" + extra), guest)
        made.append(xend)
        xend.start()
        return xend

    yield make
    for xend in made:
        xend.http.close()
        xend.home.xend("stop")
        kill_guests(xend.home.run_dir)
        shutil.rmtree(xend.home.root, ignore_errors=True)


# --- a console client ---------------------------------------------------------------------------


class Console:
    """A TCP client of a console port, reading with deadlines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seen = b""

    def close(self) -> None:
        self.sock.close()

    def expect(self, pattern: bytes, timeout: float = 30.0) -> re.Match[bytes]:
        """Read until ``pattern`` (a regex) matches what came since the last match."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout:g} s; the console said "
                                     f"{self.seen[-2000:]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"the console closed before {pattern!r}: "
                                     f"{self.seen[-2000:]!r}")
            self.seen += data
        self.seen = self.seen[match.end():]
        return match

    def silent(self, pattern: bytes, seconds: float) -> bool:
        """Whether ``pattern`` does NOT show up within ``seconds``."""
        try:
            self.expect(pattern, seconds)
        except AssertionError:
            return True
        return False

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def run(self, command: str, answer: bytes, timeout: float = 30.0) -> re.Match[bytes]:
        """Type ``command`` and wait for ``answer``, a regex the echo of the line cannot
        match (write the command so that only its output does)."""
        self.type(command)
        return self.expect(answer, timeout)

    def uptime(self) -> float:
        match = self.run("echo UP-$(cut -d' ' -f1 /proc/uptime)-", rb"UP-([0-9.]+)-")
        return float(match.group(1))


@contextlib.contextmanager
def console(port: int) -> Iterator[Console]:
    client = Console(port)
    try:
        yield client
    finally:
        client.close()


def booted(con: Console) -> float:
    """Wait for the guest's prompt; seconds it took."""
    began = time.monotonic()
    con.expect(rb"GUEST-UP", BOOT_TIMEOUT)
    con.expect(re.escape(PROMPT), BOOT_TIMEOUT)
    return time.monotonic() - began


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


# --- the tests ---------------------------------------------------------------------------------


def test_boot_to_the_prompt_answer_a_command_and_pause(qemu_xend: Callable[..., Xend]) -> None:
    xend = qemu_xend()
    began = time.monotonic()
    info = xend.create("q1")
    domid = int(sxp.child_value(info, "id"))
    with console(xend.console_port("q1")) as con:
        booted(con)
        boot_seconds = time.monotonic() - began
        print(f"xm create → prompt through xend: {boot_seconds:.2f} s")
        con.run("echo ANSWER-$((40+2))", rb"ANSWER-42")
        assert xend.state("q1") in ("r----", "-b---")
        assert not process_gone(xend.qemu_pid(domid))

        before = con.uptime()
        xend.ok("q1", "pause")
        assert xend.state("q1") == "--p--"
        paused_at = time.monotonic()
        con.type("echo PAUSED-$((1+1))")
        assert con.silent(rb"PAUSED-2", 2.0), "a paused guest answered"
        xend.ok("q1", "unpause")
        con.expect(rb"PAUSED-2", 30)
        wall = time.monotonic() - paused_at
        guest = con.uptime() - before
        assert guest < wall - 1.5, f"the guest's clock ran while paused: {guest} of {wall} s"
        assert xend.state("q1") in ("r----", "-b---")


def test_shutdown_poweroff_and_halt_end_the_domains(qemu_xend: Callable[..., Xend]) -> None:
    xend = qemu_xend()
    xend.create("off")
    xend.create("halted", ["restart", "always"])
    with console(xend.console_port("off")) as off, console(xend.console_port("halted")) as halted:
        booted(off)
        booted(halted)
        pids = {name: xend.qemu_pid(int(sxp.child_value(xend.info(name), "id")))
                for name in ("off", "halted")}
        xend.ok("off", "shutdown", reason="poweroff")
        xend.ok("halted", "shutdown", reason="halt")  # never restarts, even under always
        xend.wait_event("xend.domain.exit (off 1 poweroff)")
        xend.wait_event("xend.domain.exit (halted 2 poweroff)")
        wait_for(lambda: set(xend.names()) == {"Domain-0"}, 30, "both domains gone")
        assert off.expect(rb"Power down", 10)
    for pid in pids.values():
        wait_for(lambda pid=pid: process_gone(pid), 10, f"qemu {pid} gone")
    assert "xend.domain.restart (halted 2 begin)" not in xend.events()
    assert not list((xend.home.run_dir / "qemu").glob("*/state.json"))


def test_reboot_relaunches_qemu_and_keeps_the_console(qemu_xend: Callable[..., Xend]) -> None:
    xend = qemu_xend()
    xend.create("rb")
    first = xend.qemu_pid(1)
    with console(xend.console_port("rb")) as con:
        booted(con)
        con.run("echo BEFORE-$((1+2))", rb"BEFORE-3")
        began = time.monotonic()
        xend.ok("rb", "shutdown", reason="reboot")
        con.expect(rb"Restarting system", 30)
        seconds = booted(con)  # the same connection sees the new boot
        print(f"reboot → prompt on the kept console: {time.monotonic() - began:.2f} s "
              f"(boot {seconds:.2f} s)")
        con.run("echo AFTER-$((2+3))", rb"AFTER-5")
    assert xend.qemu_pid(1) != first
    assert process_gone(first)
    assert sxp.child_value(xend.info("rb"), "id") == "1"
    for line in ("xend.domain.exit (rb 1 reboot)", "xend.domain.restart (rb 1 success)"):
        assert line in xend.events()


def test_a_guest_reboot_from_inside_restarts_it(qemu_xend: Callable[..., Xend]) -> None:
    xend = qemu_xend()
    xend.create("inside")
    with console(xend.console_port("inside")) as con:
        booted(con)
        con.type("reboot -f")
        booted(con)  # the same console connection sees the new boot
    xend.wait_event("xend.domain.restart (inside 1 success)")
    assert "xend.domain.exit (inside 1 reboot)" in xend.events()
    assert sxp.child_value(xend.info("inside"), "id") == "1"


@pytest.mark.parametrize("mode", ["never", "always"])
def test_a_crash_is_handled_per_restart_mode(qemu_xend: Callable[..., Xend], mode: str) -> None:
    xend = qemu_xend()
    xend.create("crashy", ["restart", mode])
    first = xend.qemu_pid(1)
    with console(xend.console_port("crashy")) as con:
        booted(con)
        xend.ok("crashy", "shutdown", reason="sysrq", key="c")
        xend.wait_event("xend.domain.exit (crashy 1 crash)")
        if mode == "never":
            wait_for(lambda: "crashy" not in xend.names(), 30, "the crashed domain gone")
            wait_for(lambda: process_gone(first), 10, "its qemu gone")
        else:
            xend.wait_event("xend.domain.restart (crashy 1 success)")
            booted(con)
            con.run("echo AGAIN-$((3+4))", rb"AGAIN-7")
            assert xend.qemu_pid(1) != first


def test_a_qemu_killed_from_outside_is_a_crash(qemu_xend: Callable[..., Xend]) -> None:
    xend = qemu_xend()
    xend.create("victim", ["restart", "never"])
    pid = xend.qemu_pid(1)
    os.kill(pid, signal.SIGKILL)
    xend.wait_event("xend.domain.exit (victim 1 crash)")
    wait_for(lambda: "victim" not in xend.names(), 30, "the domain gone")


def test_kill_9_of_xend_leaves_guests_running_and_a_new_xend_adopts_them(
    qemu_xend: Callable[..., Xend],
) -> None:
    xend = qemu_xend()
    xend.create("keeper")
    xend.create("offline")
    xend.create("killed")
    ports = {name: xend.console_port(name) for name in ("keeper", "offline", "killed")}
    for port in ports.values():
        with console(port) as con:
            booted(con)
    pids = {domid: xend.qemu_pid(domid) for domid in (1, 2, 3)}

    os.kill(xend.xend_pid(), signal.SIGKILL)
    wait_for(lambda: xend.home.xend("status").returncode == 3, 10, "xend gone")
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
        xend.ok("keeper", "pause")
        assert xend.state("keeper") == "--p--"
        xend.ok("keeper", "unpause")
        con.run("echo STILL-$((6+6))", rb"STILL-12")
        xend.ok("keeper", "shutdown", reason="poweroff")
        xend.wait_event("xend.domain.exit (keeper 1 poweroff)")
    wait_for(lambda: process_gone(pids[1]), 10, "keeper's qemu gone")


def test_a_kernel_that_cannot_be_read_fails_the_create_and_leaves_nothing(
    qemu_xend: Callable[..., Xend], guest: Guest,
) -> None:
    xend = qemu_xend()
    config = vm(guest, "nokernel", kernel="/nonexistent/vmlinuz")
    reply = xend.http.post("/xend/domain/", data={"op": "create", "config": sxp.show(config)})
    assert reply.status_code == 500
    assert "kernel /nonexistent/vmlinuz: No such file or directory" in reply.text
    assert xend.names() == ["Domain-0"]
    assert not list((xend.home.run_dir / "qemu").glob("[0-9]*"))


EXAMPLE = ROOT / "etc" / "examples" / "qemu-domain.sxp"


def test_the_shipped_example_with_xm(qemu_xend: Callable[..., Xend], guest: Guest) -> None:
    linux = sxp.child_value(sxp.parse(EXAMPLE.read_text()), "image")
    example_kernel = str(sxp.child_value(linux, "kernel"))
    if Path(example_kernel).resolve() != Path(guest.kernel).resolve():
        pytest.skip(f"the example names {example_kernel}; this build went to {guest.kernel}")
    xend = qemu_xend()
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
        assert listed[:3] == ["qemu1", "1", "128"]
        run("shutdown", "-w", "qemu1")
    assert "qemu1" not in run("list")


def test_without_its_agent_a_guest_is_powered_off_through_acpi(
    qemu_xend: Callable[..., Xend],
) -> None:
    xend = qemu_xend()
    xend.create("noagent", ["restart", "never"])
    with console(xend.console_port("noagent")) as con:
        booted(con)
        # init respawns the agent: make it one that never opens the control port.
        con.run("printf '#!/bin/sh\\nexec sleep 100000\\n' > /sbin/xend-agent; "
                "killall xend-agent; echo GONE-$((4+4))", rb"GONE-8")
        xend.ok("noagent", "shutdown", reason="poweroff")
        xend.wait_event("xend.domain.exit (noagent 1 poweroff)")
    dmesg = xend.http.get("/xend/node/dmesg").text
    assert "domain 1: ACPI power button pressed (poweroff)" in dmesg
