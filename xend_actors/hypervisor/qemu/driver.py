"""QemuDriver: xend's hypervisor driver for real guests, one qemu process per domain.

It owns the table of domains (``guest.py`` runs each one): ids are allocated as Xen
does, a counter that skips ids in use (kept in ``<run-dir>/qemu/next-domid``), or the
id asked for when xend restarts a domain. Domain 0 is the host. The accelerator is
chosen once per host boot (``accel.py``) and shown in physinfo. xend reboots a domain
by destroying it and creating it again with the same id: a fresh qemu, the console
relay re-attached to it. When xend starts again the driver adopts the domains a
previous one left in the run dir: live processes get a new QMP connection, dead ones
are reported as they ended (crashed if nobody saw them end).

Host-wide scheduler settings (bvt context allowance, round-robin slice) mean nothing
to the host's scheduler and are refused. Devices: xend's controllers send Xen's control
messages, which ``backends.py`` answers with QMP hot-plug on the domain's qemu.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound, XendError
from xend_actors.hypervisor.base import (
    DomainChanged,
    DomainCounters,
    GuestMessage,
    HvDomain,
    LinuxImage,
    Notification,
    SchedParams,
    ShutdownReason,
    StreamProgress,
    StreamResult,
    VbdCounters,
)
from xend_actors.hypervisor.checks import check_cpu, check_create, check_memory_free
from xend_actors.hypervisor.qemu import cgroup, counters, host, process, transfer
from xend_actors.hypervisor.qemu import state as runtime
from xend_actors.hypervisor.qemu.accel import (
    AccelChoice,
    AccelMode,
    forced,
    load_choice,
    probe,
    save_choice,
)
from xend_actors.hypervisor.qemu.backends import QemuBackends
from xend_actors.hypervisor.qemu.guest import QemuGuest
from xend_actors.hypervisor.qemu.process import DomainPaths
from xend_actors.hypervisor.ring.messages import Message, MessageType
from xend_actors.node import PhysInfo
from xend_actors.store import TMP_PREFIX, atomic_write

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
DOMID_FIRST_RESERVED = 0x7FF0  # as Xen: ids from here up are its own
DMESG_LIMIT = 16 * 1024
BLOCKSTATS_TIMEOUT = 1.0  # a sample does not wait longer for one qemu's disk counters
AGENT_COMMANDS = {ShutdownReason.POWEROFF: "poweroff",
                  ShutdownReason.HALT: "poweroff",  # Xen sends halt as poweroff (facts §6)
                  ShutdownReason.REBOOT: "reboot", ShutdownReason.SUSPEND: "suspend"}


class QemuDriver:
    kind = "qemu"  # names its save files and migration offers

    def __init__(self, run_dir: Path, *, accel: AccelMode = AccelMode.AUTO,
                 qemu: str = QEMU, timeout: float = 10.0) -> None:
        binary = shutil.which(qemu)
        if binary is None:
            raise HypervisorError(f"{qemu} is not installed (apt-get install qemu-system-x86)")
        self.qemu = binary
        self.timeout = timeout
        self.root = run_dir / "qemu"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.version = _qemu_version(binary)
        self._lock = threading.RLock()  # guards the table, the watchers and the ring
        self._guests: dict[int, QemuGuest] = {}
        self._launched_early: set[int] = set()  # by ``create``, for a ``build`` to come
        self._watchers: list[Callable[[Notification], None]] = []
        self._backends = QemuBackends(self._get, self._tell)
        # Device work one message at a time per domain, since a guest's unplug is waited
        # for (seconds, more if it is paused); the backends' tables are keyed by domain,
        # so one domain's devices never wait for another's.
        self._device_locks: dict[int, threading.RLock] = {}
        self._backings_lock = threading.Lock()
        self._dmesg: deque[str] = deque()
        self._dmesg_size = 0
        self._accel_lock = threading.Lock()
        self._accel = forced(accel) or load_choice(self._accel_file)
        self._hierarchy = cgroup.find_hierarchy()
        self._next_domid = self._read_next_domid()
        self._say(f"qemu driver: {self.version}, run dir {self.root}")
        if self._accel is not None:
            self._say(f"accelerator: {self._accel.describe()}")
        self._adopt_all()

    # --- the host ---------------------------------------------------------------------

    def physinfo(self) -> PhysInfo:
        memory = host.meminfo()
        accel = (self._accel.describe() if self._accel is not None else
                 "accelerator chosen when the first domain is built")
        return PhysInfo(cores=_cpus(),
                        hyperthreads_per_core=host.hyperthreads_per_core(),
                        cpu_mhz=host.cpu_mhz(), memory_mb=memory.get("MemTotal", 0) // 1024,
                        free_memory_mb=memory.get("MemAvailable", 0) // 1024,
                        hypervisor=f"{self.version}, {accel}")

    def list_domains(self) -> list[HvDomain]:
        with self._lock:
            guests = [self._guests[domid] for domid in sorted(self._guests)]
        return [host.dom0(), *(guest.info() for guest in guests)]

    def has_domain_named(self, name: str) -> bool:
        """From the table alone: listing would read three /proc files a domain."""
        with self._lock:
            return name == host.DOM0_NAME or any(
                guest.state.name == name for guest in self._guests.values())

    def counters(self) -> list[DomainCounters]:
        """Every domain, its vbds from its qemu (one ``query-blockstats`` each) and its
        vifs from one netlink dump of the taps."""
        with self._lock:
            guests = [self._guests[domid] for domid in sorted(self._guests)]
        taps = counters.taps() if guests else {}
        found = [DomainCounters(host.dom0())]
        for guest in guests:
            vbds: tuple[VbdCounters, ...] = ()
            if guest.runs():
                try:
                    vbds = counters.vbds(guest.execute("query-blockstats",
                                                       timeout=BLOCKSTATS_TIMEOUT))
                except XendError as error:  # it went meanwhile: no disks to count
                    log.debug("Domain %s: no block counters: %s", guest.domid, error)
            found.append(DomainCounters(guest.info(), vbds, taps.get(guest.domid, ())))
        return found

    def domain(self, domid: int) -> HvDomain:
        if domid == 0:
            return host.dom0()
        return self._get(domid).info()

    def dmesg(self, clear: bool = False) -> str:
        with self._lock:
            text = "".join(self._dmesg)
            if clear:
                self._dmesg.clear()
                self._dmesg_size = 0
        return text

    def set_bvt_ctx_allow(self, ctx_allow: int) -> None:
        raise HypervisorError("qemu domains run under the host's scheduler, which has no "
                              "bvt context-switch allowance: nothing to set")

    def set_rrobin_slice(self, slice_ns: int) -> None:
        raise HypervisorError("qemu domains run under the host's scheduler, which has no "
                              "round-robin slice: nothing to set")

    def watch(self, notify: Callable[[Notification], None]) -> None:
        with self._lock:
            self._watchers.append(notify)

    def close(self) -> None:
        """Let go of every qemu (they keep running, for the next xend to adopt)."""
        with self._lock:
            guests = list(self._guests.values())
        for guest in guests:
            guest.close()

    # --- a domain's life --------------------------------------------------------------------

    def create(self, name: str, memory_mb: int, *, vcpus: int = 1, cpu: int = -1,
               domid: int | None = None, image: LinuxImage | None = None) -> int:
        """An empty paused domain: its record and folder. Its qemu starts at ``build``,
        or now if given the ``image`` (and the accelerator is chosen: probing one takes
        seconds), so that qemu makes its machine while xend records the domain and
        starts its actor; ``build`` then finds it launched. Nothing is left of a launch
        that fails."""
        what = f"cannot create domain {name}"
        check_create(what, memory_mb, vcpus, cpu, cpus=_cpus())
        check_memory_free(what, memory_mb, host.meminfo().get("MemAvailable", 0) // 1024)
        allocated = domid is None
        with self._lock:
            if domid is None:
                domid = self._allocate_domid(what)
            else:
                self._check_domid_free(domid, what)
            paths = DomainPaths(self.root / str(domid))
            paths.check()
            try:
                paths.folder.mkdir(mode=0o700)
            except FileExistsError:  # left by a domain no driver knows any more
                shutil.rmtree(paths.folder)
                paths.folder.mkdir(mode=0o700)
            # Its state is written first by its launch, naming the qemu: a xend killed
            # before leaves a folder without one, removed at the next start with any qemu
            # launched from it (``_adopt_all``).
            st = runtime.DomainState(domid=domid, name=name, memory_mb=memory_mb,
                                     maxmem_mb=memory_mb, vcpus=vcpus, cpu=cpu,
                                     boot=runtime.boot_id())
            self._guests[domid] = self._guest_for(st, paths)
        built = ""
        if image is not None and self._accel is not None:
            try:
                built = self._launch_built(domid, image)
            except BaseException:
                self.destroy(domid)
                raise
            with self._lock:
                self._launched_early.add(domid)
        self._say(f"domain {domid} created: {name}, {memory_mb} MiB, {vcpus} vcpu(s)")
        if built:
            self._say(built)
        if allocated:
            self._keep_next_domid()
        return domid

    def build(self, domid: int, image: LinuxImage) -> None:
        """Launch the domain's qemu, paused, with the image's kernel, ramdisk and args;
        returns once its sockets listen, before qemu has made the machine (``ready``).
        At once if ``create`` launched it."""
        with self._lock:
            if domid in self._launched_early:
                self._launched_early.discard(domid)
                return
        self._say(self._launch_built(domid, image))

    def _launch_built(self, domid: int, image: LinuxImage) -> str:
        """Launch the domain's qemu to boot ``image``; the line that says so."""
        guest = self._not_host(domid, "build")
        pid, accel = self._launch(guest, image, f"cannot build domain {domid}", incoming=False)
        return f"domain {domid} built: kernel {image.kernel}, qemu pid {pid}, {accel}"

    def ready(self, domid: int) -> None:
        """Wait until the qemu just launched has made the machine and answers."""
        guest = self._not_host(domid, "wait for")
        with guest.ops:  # a destroy meanwhile waits, as it does for the launch
            guest.ready()

    def _launch(self, guest: QemuGuest, image: LinuxImage, what: str,
                incoming: bool) -> tuple[int, str]:
        with guest.ops:
            if guest.state.built:
                raise Conflict(f"{what}: it is already built")
            if not image.kernel:
                raise BadRequest(f"{what}: no kernel given")
            _check_readable(image.kernel, "kernel", what)
            if image.ramdisk:
                _check_readable(image.ramdisk, "ramdisk", what)
            accel = self._choose_accel(Path(image.kernel)).accel.value
            return guest.launch(self.qemu, image, accel, incoming), accel

    # The Domain that pauses or unpauses tells the table its reading after (``announce``):
    # qemu's STOP or RESUME would only have the table read the domain a second time.

    def pause(self, domid: int) -> None:
        self._not_host(domid, "pause").pause(quiet=True)

    def unpause(self, domid: int) -> None:
        if self._not_host(domid, "unpause").unpause(quiet=True):
            self._backends.guest_started(domid)

    def destroying(self, domid: int) -> None:
        with contextlib.suppress(NotFound):
            self._not_host(domid, "destroy").going()

    def destroy(self, domid: int) -> None:
        guest = self._not_host(domid, "destroy")
        with guest.ops:
            with self._lock:
                if self._guests.get(domid) is not guest:
                    raise NotFound(f"no domain {domid}")
            guest.destroy()
            with self._lock:
                del self._guests[domid]
                self._launched_early.discard(domid)
            self._backends.domain_gone(domid)
            with self._lock:
                self._device_locks.pop(domid, None)
        self._say(f"domain {domid} destroyed")
        self._notify(domid)

    def shutdown(self, domid: int, reason: ShutdownReason, key: str = "") -> None:
        """Ask the guest to shut down: through its agent, else ACPI; returns at once."""
        guest = self._not_host(domid, "send a shutdown request to")
        what = f"cannot ask domain {domid} to shut down for {reason.value}"
        if reason is ShutdownReason.SYSRQ:
            if len(key) != 1 or not key.isascii() or not key.isalnum():
                raise BadRequest(f"{what}: the sysrq key must be one letter or digit, "
                                 f"got {key!r}")
            command = f"sysrq {key}"
        elif reason in AGENT_COMMANDS:
            command = AGENT_COMMANDS[reason]
        else:
            raise BadRequest(f"{what}: that is not a shutdown request")
        guest.shutdown(reason, command)

    # --- save, restore, migrate (transfer.py) ---------------------------------------------

    def describe(self, domid: int) -> bytes:
        return transfer.machine(self._not_host(domid, "describe"), self.version).to_bytes()

    def send_state(self, domid: int, fd: int, *, live: bool, mbit: int,
                   progress: Callable[[StreamProgress], None]) -> StreamResult:
        guest = self._not_host(domid, "save")
        result = transfer.send(guest, fd, live=live, mbit=mbit, progress=progress)
        self._say(f"domain {domid}: state sent, {result.sent} bytes")
        return result

    def prepare_incoming(self, name: str, meta: bytes) -> int:
        """Returns as qemu starts, before it has made the machine: its caller's own
        work overlaps qemu's start-up, and the first command waits for it (``ready``)."""
        machine = transfer.Machine.from_bytes(meta)
        domid = self.create(name, machine.memory_mb, vcpus=machine.vcpus)
        try:
            guest = self._get(domid)
            pid, accel = self._launch(guest, machine.image, f"cannot restore domain {name}",
                                      incoming=True)
            transfer.prepare(guest, machine)
        except BaseException:
            self.destroy(domid)
            raise
        self._say(f"domain {domid} waits for its state: {name}, qemu pid {pid}, {accel}")
        return domid

    def receive_state(self, domid: int, fd: int) -> None:
        transfer.receive(self._not_host(domid, "restore"), fd)

    def wait_received(self, domid: int, timeout: float) -> None:
        transfer.wait_received(self._not_host(domid, "restore"), timeout)
        self._say(f"domain {domid}: state loaded")

    def resume(self, domid: int) -> None:
        transfer.resume(self._not_host(domid, "resume"))

    # --- memory and scheduling ------------------------------------------------------------

    def set_maxmem(self, domid: int, memory_mb: int) -> None:
        guest = self._not_host(domid, "set the maximum memory of")
        what = f"cannot set the maximum memory of domain {domid} to {memory_mb} MiB"
        if memory_mb < 1:
            raise BadRequest(f"{what}: it must be at least 1 MiB")
        if memory_mb > guest.state.memory_mb:
            raise HypervisorError(f"{what}: qemu fixes a domain's RAM at launch, and this one "
                                  f"has {guest.state.memory_mb} MiB")
        guest.update(maxmem_mb=memory_mb)

    def set_memory_target(self, domid: int, memory_mb: int) -> None:
        """Ask the guest's balloon driver to give back (or take) memory down to ``memory_mb``."""
        guest = self._not_host(domid, "set the memory of")
        what = f"cannot set the memory of domain {domid} to {memory_mb} MiB"
        if memory_mb < 1:
            raise BadRequest(f"{what}: it must be at least 1 MiB")
        if memory_mb > guest.state.maxmem_mb:
            raise Conflict(f"{what}: its maximum is {guest.state.maxmem_mb} MiB")
        if not guest.state.built:
            raise Conflict(f"{what}: it has not been built")
        guest.set_memory_target(memory_mb)

    def pincpu(self, domid: int, cpu: int) -> None:
        guest = self._not_host(domid, "pin")
        check_cpu(f"cannot pin domain {domid} to cpu {cpu}", cpu, cpus=_cpus())
        guest.pin(cpu)

    def set_sched(self, domid: int, params: SchedParams) -> None:
        self._not_host(domid, "set the scheduling of").set_sched(params)

    def sched(self, domid: int) -> list[SchedParams]:
        return list(self._not_host(domid, "read the scheduling of").state.sched)

    # --- devices -----------------------------------------------------------------------------

    def send_control(self, domid: int, message: Message) -> Message:
        """A control message for the device backends (domain 0) or a guest's frontends."""
        backend = message.type in (MessageType.BLKIF_BE, MessageType.NETIF_BE)
        with self._device_lock(getattr(message, "domid", domid) if backend else domid):
            return self._backends.handle(domid, message)

    def attach_backing(self, path: str, readonly: bool = False, shared: bool = False) -> int:
        with self._backings_lock:
            return self._backends.attach_backing(path, readonly, shared)

    def detach_backing(self, device: int) -> None:
        with self._backings_lock:
            self._backends.detach_backing(device)

    def _device_lock(self, domid: int) -> threading.RLock:
        """The lock of ``domid``'s device work (the domain whose devices a message is for)."""
        with self._lock:
            return self._device_locks.setdefault(domid, threading.RLock())

    # --- the console ---------------------------------------------------------------------------

    def open_console(self, domid: int) -> socket.socket:
        """A new connection to the guest's serial console (an earlier one handed out is
        shut, since qemu serves one at a time); it ends when qemu does."""
        return self._not_host(domid, "open the console of").open_console()

    # --- inside --------------------------------------------------------------------------------

    def _get(self, domid: int) -> QemuGuest:
        with self._lock:
            try:
                return self._guests[domid]
            except KeyError:
                raise NotFound(f"no domain {domid}") from None

    def _not_host(self, domid: int, action: str) -> QemuGuest:
        if domid == 0:
            raise Conflict(f"cannot {action} {host.DOM0_NAME}: it is the host itself")
        return self._get(domid)

    def _guest_for(self, st: runtime.DomainState, paths: DomainPaths) -> QemuGuest:
        return QemuGuest(st, paths, changed=self._notify, say=self._say,
                         hierarchy=self._hierarchy, timeout=self.timeout)

    def _check_domid_free(self, domid: int, what: str) -> None:
        if not 0 < domid < DOMID_FIRST_RESERVED:
            raise BadRequest(f"{what}: domain id {domid} is out of range "
                             f"(1..{DOMID_FIRST_RESERVED - 1})")
        if domid in self._guests:
            raise Conflict(f"{what}: domain id {domid} is in use")

    def _allocate_domid(self, what: str) -> int:
        for _ in range(DOMID_FIRST_RESERVED):
            domid = self._next_domid
            self._next_domid = domid + 1 if domid + 1 < DOMID_FIRST_RESERVED else 1
            if domid not in self._guests:
                return domid
        raise HypervisorError(f"{what}: every domain id is in use")

    def _keep_next_domid(self) -> None:
        """For a xend that starts again (after a host crash any id will do); written
        once the domain's qemu is launched, not in its way."""
        with self._lock:
            following = self._next_domid
        atomic_write(self._next_domid_file, f"{following}\n".encode(), sync=False)

    @property
    def _next_domid_file(self) -> Path:
        return self.root / "next-domid"

    @property
    def _accel_file(self) -> Path:
        return self.root / "accel.json"

    def _read_next_domid(self) -> int:
        try:
            value = int(self._next_domid_file.read_text())
        except (OSError, ValueError):
            return 1
        return value if 0 < value < DOMID_FIRST_RESERVED else 1

    def _choose_accel(self, kernel: Path) -> AccelChoice:
        with self._accel_lock:
            if self._accel is None:
                choice = probe(self.qemu, kernel)
                save_choice(self._accel_file, choice)
                self._accel = choice
                self._say(f"accelerator: {choice.describe()}")
            return self._accel

    def _notify(self, domid: int) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for notify in watchers:
            try:
                notify(DomainChanged(domid))
            except Exception:
                log.exception("A watcher of the qemu driver failed on domain %d", domid)

    def _tell(self, message: GuestMessage) -> None:
        """A guest's (emulated) frontend speaks: to every watcher."""
        with self._lock:
            watchers = list(self._watchers)
        for notify in watchers:
            try:
                notify(message)
            except Exception:
                log.exception("A watcher of the qemu driver failed on %s", message)

    def _say(self, text: str) -> None:
        """A line for the log and for ``dmesg``, the driver's own ring."""
        log.info("%s", text)
        line = f"(qemu) {text}\n"
        with self._lock:
            self._dmesg.append(line)
            self._dmesg_size += len(line)
            while self._dmesg_size > DMESG_LIMIT:
                self._dmesg_size -= len(self._dmesg.popleft())

    def _adopt_all(self) -> None:
        """Take over the domains a previous xend left in the run dir."""
        boot = runtime.boot_id()
        for stale in self.root.glob(f"{TMP_PREFIX}*"):  # a write of next-domid cut off
            stale.unlink(missing_ok=True)
        for folder in sorted(self.root.iterdir(), key=lambda p: p.name):
            if not folder.is_dir() or not folder.name.isdigit():
                continue
            paths = DomainPaths(folder)
            try:
                st = runtime.load(paths.state)
            except FileNotFoundError:
                # A create cut off before its launch wrote the state (atomically, naming
                # the qemu): a qemu launched meanwhile is found by its command line.
                for pid in process.kill_unrecorded(paths):
                    log.warning("Killed qemu %s of %s, launched but never recorded (xend "
                                "stopped meanwhile)", pid, folder)
                log.warning("Removed %s: a create cut off before its state was written",
                            folder)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            except (OSError, ValueError) as error:
                log.warning("Left %s alone: its state is unreadable (%s)", folder, error)
                continue
            if st.boot != boot or not st.built:
                # From before the host rebooted, or never built: nothing runs for it,
                # unless a xend was killed between launching its qemu and recording it.
                if st.boot == boot:
                    for pid in process.kill_unrecorded(paths):
                        log.warning("Killed qemu %s of domain %s, launched but never "
                                    "recorded (xend stopped meanwhile)", pid, st.domid)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            guest = self._guest_for(st, paths)
            with self._lock:
                self._guests[st.domid] = guest
            guest.adopt()
            if guest.runs():
                with self._device_lock(st.domid):
                    self._backends.adopt(st.domid, guest)


def _cpus() -> int:
    return os.cpu_count() or 1


def _check_readable(path: str, kind: str, what: str) -> None:
    try:
        with open(path, "rb") as data:
            data.read(1)
    except OSError as error:
        raise HypervisorError(f"{what}: {kind} {path}: {error.strerror}") from None


def _qemu_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HypervisorError(f"cannot run {binary}: {error}") from None
    match = re.search(r"version (\S+)", out)
    return f"qemu {match.group(1)}" if match else "qemu"
