"""One domain's qemu process: its folder, its command line, launching it, finding it again.

A domain's folder is ``<run-dir>/qemu/<domid>/``: the QMP, serial console and control
channel sockets, qemu's own log and trace file. qemu runs detached in a session of its
own, so it outlives xend (even ``kill -9``); it is identified by its pid and its start
time (``/proc/<pid>/stat`` field 22), so a recycled pid is never taken for it.

The command line is fixed by what the driver relies on:
``-S`` (created paused, like a new Xen domain), ``-no-reboot -no-shutdown`` (a guest's
poweroff or reboot leaves qemu stopped with a SHUTDOWN event, so a shut-down domain
stays listed until xend destroys it, as on Xen; reboot is destroy + relaunch),
``-action panic=pause`` with ``pvpanic`` (a panic leaves it in ``guest-panicked``), and
a trace of shutdown requests in ``qemu.trace``, so the reason of a shutdown that
happened while xend was not running is still known when it comes back. A domain being
restored or migrated in gets the same line plus ``-incoming defer``.

xend makes qemu's three sockets itself, listening, and hands them over (``fd=``, as
libvirt does): so it connects to them at once, while qemu starts, and never polls for
them. Their paths stay where a xend started later looks for them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xend_actors.errors import HypervisorError
from xend_actors.hypervisor import detached

SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
LOG_TAIL_BYTES = 1500
POLL = 0.005  # between looks at a process that may have exited, without pidfds
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONTROL_PORT = "org.xend.control"
CONTROL_DEVICE = "ctlport"  # the virtserialport's id: VSERPORT_CHANGE names it
CONTROL_CHARDEV = "ctl"


@dataclass(frozen=True)
class DomainPaths:
    """The files of one domain's qemu."""

    folder: Path

    @property
    def qmp(self) -> Path:
        return self.folder / "qmp.sock"

    @property
    def console(self) -> Path:
        return self.folder / "console.sock"

    @property
    def control(self) -> Path:
        return self.folder / "control.sock"

    @property
    def state(self) -> Path:
        return self.folder / "state.json"

    @property
    def log(self) -> Path:
        return self.folder / "qemu.log"

    @property
    def trace(self) -> Path:
        return self.folder / "qemu.trace"

    def check(self) -> None:
        longest = max((self.qmp, self.console, self.control), key=lambda p: len(str(p)))
        if len(os.fsencode(longest)) > SOCKET_PATH_MAX:
            raise HypervisorError(f"the qemu socket path {longest} is longer than "
                                  f"{SOCKET_PATH_MAX} bytes: choose a shorter xend-run-dir")


@dataclass(frozen=True)
class LaunchSpec:
    """What one qemu is launched with."""

    name: str
    memory_mb: int
    vcpus: int
    accel: str
    kernel: str
    ramdisk: str
    cmdline: str
    incoming: bool = False  # waits for a saved or migrating state (``migrate-incoming``)


class Listening:
    """A domain's qemu sockets, bound and listening, until qemu has been handed them."""

    def __init__(self, paths: DomainPaths) -> None:
        self.sockets: dict[Path, socket.socket] = {}
        try:
            for path in (paths.qmp, paths.console, paths.control):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a socket of the domain's last qemu: its folder is xend's
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sockets[path] = listener
                listener.bind(str(path))
                listener.listen(8)
        except OSError as error:
            self.close()
            raise HypervisorError(f"cannot make the qemu socket {path}: "
                                  f"{error.strerror or error}") from None

    def fd(self, path: Path) -> int:
        return self.sockets[path].fileno()

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(listener.fileno() for listener in self.sockets.values())

    def close(self) -> None:
        """xend's copies: once qemu has them, or never will. A qemu that exits then
        takes the sockets with it, and whoever waits on one hears so."""
        for listener in self.sockets.values():
            listener.close()


def escape(text: str) -> str:
    """A value inside a qemu option list (``-chardev a=b,c=d``): commas are doubled."""
    return text.replace(",", ",,")


def qemu_argv(qemu: str, spec: LaunchSpec, paths: DomainPaths,
              listening: Listening | None = None) -> list[str]:
    """qemu's command line; its sockets are ``listening``'s if given, else qemu makes them."""
    def where(path: Path) -> str:
        return f"fd={listening.fd(path)}" if listening else f"path={escape(str(path))}"

    argv = [
        qemu, "-name", f"guest={escape(spec.name)},debug-threads=on",
        "-accel", spec.accel, "-machine", "pc", "-m", str(spec.memory_mb),
        "-smp", str(spec.vcpus),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-S", "-no-reboot", "-no-shutdown", "-action", "panic=pause",
        "-kernel", spec.kernel,
        "-append", spec.cmdline,
        "-chardev", f"socket,id=qmp,{where(paths.qmp)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=ser0,{where(paths.console)},server=on,wait=off",
        "-serial", "chardev:ser0",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev",
        f"socket,id={CONTROL_CHARDEV},{where(paths.control)},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev={CONTROL_CHARDEV},"
                   f"id={CONTROL_DEVICE},name={CONTROL_PORT}",
        "-device", "pvpanic",
        "-device", "virtio-balloon-pci,id=balloon0",
        "-trace", "enable=qemu_system_shutdown_request", "-D", str(paths.trace),
    ]
    if spec.ramdisk:
        argv[argv.index("-append"):argv.index("-append")] = ["-initrd", spec.ramdisk]
    if spec.incoming:
        argv += ["-incoming", "defer"]
    return argv


def launch(qemu: str, spec: LaunchSpec, paths: DomainPaths,
           say: Callable[[list[str]], None] = lambda argv: None) -> subprocess.Popen[bytes]:
    """Start qemu detached (its own session, stdio to ``qemu.log``) on sockets made
    here, its command line told to ``say`` (once it is started, or failed to: not in
    its way); returns at once, its sockets already taking connections."""
    listening = Listening(paths)
    argv: list[str] = []
    try:
        argv = qemu_argv(qemu, spec, paths, listening)
        return detached.start(argv, paths.log, pass_fds=listening.fds)
    finally:
        listening.close()
        if argv:
            say(argv)


def log_tail(paths: DomainPaths) -> str:
    try:
        text = detached.tail(paths.log, LOG_TAIL_BYTES)
    except OSError:
        text = ""
    return text or "(qemu said nothing)"


# --- /proc -----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 on), or None."""
    text = _read_proc(f"/proc/{pid}/stat")
    return None if text is None else text.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if there is no process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (not a zombie)."""
    fields = _stat_fields(pid)
    return fields is not None and int(fields[19]) == started and fields[0] not in ("Z", "X")


def alive_and_cpu(pid: int, started: int) -> tuple[bool, float]:
    """``alive``, and the process's user and system time so far (0 when it is gone),
    from one read of its stat: a domain's reading wants both."""
    fields = _stat_fields(pid)
    if fields is None:
        return False, 0.0
    runs = int(fields[19]) == started and fields[0] not in ("Z", "X")
    return runs, (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class ThreadReading:
    """A vcpu thread as ``/proc`` shows it: on a cpu or waiting for one (state R), and the
    cpu it last ran on (``stat``'s field 39, ``processor``)."""

    running: bool
    cpu: int


def thread_reading(pid: int, tid: int) -> ThreadReading | None:
    """Thread ``tid`` of ``pid`` now; None if it is gone."""
    text = _read_proc(f"/proc/{pid}/task/{tid}/stat")
    if text is None:
        return None
    fields = text.rpartition(")")[2].split()  # from field 3 (state) on
    return ThreadReading(fields[0] == "R", int(fields[36]))


def _read_proc(path: str) -> str | None:
    """A small /proc file's text, None if it is gone. Plain system calls: a domain's
    reading (every pause and unpause, every look at it) reads three of these."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def stop_launched(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Kill a qemu this xend launched and reap it."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)


def kill_unrecorded(paths: DomainPaths, timeout: float = 5.0) -> list[int]:
    """SIGKILL every qemu whose command line names this folder's trace file: one a xend
    launched and was killed before it recorded it. The pids killed."""
    mark = f"\0{paths.trace}\0".encode()  # its -D: made sockets have no path to name
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if mark in (entry / "cmdline").read_bytes():
                started = start_time(int(entry.name))
                if started is not None:
                    kill(int(entry.name), started, None, timeout)
                    killed.append(int(entry.name))
    return killed


def kill(pid: int, started: int, process: subprocess.Popen[bytes] | None,
         timeout: float = 5.0) -> None:
    """SIGKILL the process if it is still the one that started at ``started``; wait for it."""
    if not alive(pid, started):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, started, process, timeout)


def wait_gone(pid: int, started: int, process: subprocess.Popen[bytes] | None,
              timeout: float) -> bool:
    """Wait up to ``timeout`` s for the process to exit (and reap it if it is ours:
    ``process``); whether it did. Told by the kernel (a pidfd), not found by polling:
    ``Popen.wait``'s own poll, its sleeps doubling to 50 ms, would add up to twice the
    time qemu takes to exit."""
    if not _exits_within(pid, started, timeout):
        return False
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):  # it exited: no wait
            process.wait(timeout=timeout)
    return True


def _exits_within(pid: int, started: int, timeout: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfds here (Linux before 5.3): look every POLL
        deadline = time.monotonic() + timeout
        while alive(pid, started):
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True
    try:
        if not alive(pid, started):  # checked after the open: the pidfd is this one's
            return True
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)
