"""One qemu domain, live: its runtime state, its process and monitor, what qemu says.

A ``QemuGuest`` is made empty by ``create`` and launched by ``launch`` (qemu takes its
kernel only on the command line; ``-S`` keeps it paused until ``cont``). Its QMP
connection's events become Xen's flags and reasons:

======================================  ==============================================
qemu                                    Xen state, reason
======================================  ==============================================
``-S`` at launch, ``STOP``              paused
``SHUTDOWN guest-shutdown``             shutdown, poweroff
``SHUTDOWN guest-reset``                shutdown, reboot (``-no-reboot``: no reset)
``GUEST_PANICKED``, ``guest-panic``     crashed (pvpanic; ``-action panic=pause``)
agent ``ok suspend``, then ``stop``     shutdown, suspend
qemu gone without xend destroying it    crashed
======================================  ==============================================

qemu stays after the guest powers off or reboots (``-no-shutdown``), so a shut-down
domain is there until xend destroys it, as on Xen. Shutdown requests go to the guest
agent on the control channel (``agent.py``); a guest without one gets ACPI's power
button (``system_powerdown``). A guest still booting towards its agent gets the request
once the agent's port opens (qemu's ``VSERPORT_CHANGE``).

Its fields are guarded by its own lock; calls to qemu are made outside it. Event
handlers run on the monitor's reader thread and never wait for qemu.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from xend_actors.errors import Conflict, HypervisorError, XendError
from xend_actors.hypervisor.base import DomainState, HvDomain, LinuxImage, SchedParams
from xend_actors.hypervisor.base import ShutdownReason as Reason
from xend_actors.hypervisor.qemu import agent, cgroup, process
from xend_actors.hypervisor.qemu import state as runtime
from xend_actors.hypervisor.qemu.process import DomainPaths, LaunchSpec
from xend_actors.hypervisor.qemu.qmp import Command, Opening, Qmp
from xend_actors.hypervisor.qemu.qmp_protocol import Event
from xend_actors.hypervisor.qemu.sched import cpu_shape

log = logging.getLogger(__name__)

ATTACH_QUERIES = ("query-status", "query-cpus-fast", "query-chardev", "query-balloon")
QUIT_TIMEOUT = 3.0
AGENT_TIMEOUT = 5.0
AGENT_GRACE = 60.0  # a guest this long after it first ran without an agent has none
DEFAULT_CONSOLE = "console=ttyS0"
NIC_PREFIX = "nic-"  # qdev ids of hot-plugged nics: nic-HANDLE

# qemu's ShutdownCause, in its order: the trace file gives the number.
SHUTDOWN_CAUSES = ("none", "host-error", "host-qmp-quit", "host-qmp-system-reset",
                   "host-signal", "host-ui", "guest-shutdown", "guest-reset", "guest-panic",
                   "subsystem-reset", "snapshot-load")
GUEST_EXITS = {"guest-shutdown": Reason.POWEROFF, "guest-reset": Reason.REBOOT,
               "subsystem-reset": Reason.REBOOT, "guest-panic": Reason.CRASH}
ACPI_REASONS = (Reason.POWEROFF, Reason.HALT, Reason.REBOOT)

Changed = Callable[[int], None]
Say = Callable[[str], None]


class QemuGuest:
    def __init__(self, state: runtime.DomainState, paths: DomainPaths, *, changed: Changed,
                 say: Say, hierarchy: cgroup.CpuHierarchy | None,
                 timeout: float = 10.0) -> None:
        self.paths = paths
        self.timeout = timeout
        self._state = state
        self._changed = changed  # tells the driver's watchers
        self._say = say  # a line for the driver's dmesg
        self._hierarchy = hierarchy
        self._lock = threading.Lock()  # guards the fields below
        self._process: subprocess.Popen[bytes] | None = None  # None once adopted
        self._qmp: Qmp | None = None
        self._opening: Opening | None = None  # launched, its monitor's answers not read yet
        self._readying = threading.Lock()  # one thread reads them
        self._paused = True
        self._destroying = False
        self._going = False  # to be destroyed: its devices go with it, unasked
        self._vcpu_threads: tuple[int, ...] = ()
        self._last_cpu = -1  # the cpu its first vcpu last ran on, as last read
        self._balloon_kb: int | None = None
        self._ran_since: float | None = None  # monotonic time it first ran
        self._console: socket.socket | None = None  # a dup of the connection handed out
        self.ops = threading.Lock()  # one lifecycle call (launch, destroy) at a time
        self._agent_lock = threading.Lock()  # qemu serves the channel to one client
        self._agent_up = threading.Event()
        self._agent_gone = False  # it was up and closed its port: no use waiting for it
        self.migration_changed = threading.Event()  # qemu said MIGRATION or MIGRATION_PASS
        self.migration_status = ""  # what qemu's last MIGRATION event said
        self._resumed = threading.Event()  # qemu said RESUME
        self._quiet = 0  # pauses and unpauses under way whose caller tells of them
        self.slots: dict[str, int] = {}  # slot key -> PCI slot it had at the source
        self.state_sent = False  # its state went out whole: only a resume runs it again

    @property
    def domid(self) -> int:
        return self._state.domid

    @property
    def state(self) -> runtime.DomainState:
        return self._state

    def info(self) -> HvDomain:
        with self._lock:
            st, paused_flag, threads = self._state, self._paused, self._vcpu_threads
            balloon, dying = self._balloon_kb, self._destroying
        ended = st.exit
        runs_now, cpu_time = process.alive_and_cpu(st.pid, st.started) if st.built else \
            (False, 0.0)
        if ended is None and st.built and not dying and not runs_now:
            ended = Reason.CRASH  # its qemu exited; the monitor's reader has yet to say so
        paused = paused_flag and ended is None
        runs = st.built and not paused and ended is None
        # The vcpu threads' own readings: whether one runs, and the cpu the first last ran
        # on (what Xen's list showed in its CPU column). A paused guest's stay where they
        # were: read once, not at every look. A pinned domain shows its pin: a sleeping
        # thread's reading moves there only when it next wakes.
        vcpus = [reading for tid in threads
                 if (reading := process.thread_reading(st.pid, tid)) is not None] \
            if runs or (st.built and ended is None and self._last_cpu < 0) else []
        busy = runs and any(vcpu.running for vcpu in vcpus)
        if vcpus:
            self._last_cpu = vcpus[0].cpu
        flags = DomainState.of(running=busy, blocked=runs and not busy, paused=paused,
                               shutdown=ended is not None and ended is not Reason.CRASH,
                               crashed=ended is Reason.CRASH, dying=dying)
        return HvDomain(
            domid=st.domid, name=st.name, state=flags,
            shutdown_reason=ended if ended is not Reason.CRASH else None,
            memory_kb=balloon if balloon is not None else st.memory_mb * 1024,
            maxmem_kb=st.maxmem_mb * 1024, vcpus=st.vcpus,
            cpu=st.cpu if st.cpu >= 0 else self._last_cpu,
            cpu_time=cpu_time)

    def update(self, **changes: object) -> None:
        """Change the runtime state and write it."""
        with self._lock:
            self._update(**changes)

    def _update(self, **changes: object) -> None:
        self._state = replace(self._state, **changes)  # type: ignore[arg-type]  # the fields' own types, by name
        if not self._destroying:  # else its folder is going: writing would make it again
            runtime.save(self.paths.state, self._state)

    # --- launching and adopting --------------------------------------------------------------

    def launch(self, qemu: str, image: LinuxImage, accel: str, incoming: bool = False) -> int:
        """Start this domain's qemu, paused, with the image (``incoming``: waiting for a
        saved or migrating state instead of booting it); its pid. Returns at once, its
        monitor connected and asked what the guest needs to know: qemu greets and answers
        once it has made its machine (its kernel loaded, some tens of milliseconds on),
        which the caller may spend opening the console; ``ready`` (or the first command)
        waits for them. Nothing is left running when it fails."""
        st = self._state
        cmdline = image.cmdline if "console=" in image.cmdline else (
            f"{DEFAULT_CONSOLE} {image.cmdline}")
        spec = LaunchSpec(st.name, st.memory_mb, st.vcpus, accel, image.kernel, image.ramdisk,
                          " ".join(cmdline.split()), incoming)
        launched = process.launch(qemu, spec, self.paths, lambda argv: log.info(
            "Launching domain %s: %s", st.domid, " ".join(argv)))
        try:
            started = process.start_time(launched.pid)
            if started is None:
                raise HypervisorError(f"qemu (pid {launched.pid}) vanished at launch: "
                                      f"{process.log_tail(self.paths)}")
            with self._lock:
                self._process = launched
                self._update(pid=launched.pid, started=started, accel=accel, image=image)
            opening = self._open_monitor()
            with self._lock:
                self._opening = opening
        except BaseException as error:
            raise self._undo_launch(launched, error) from None
        return launched.pid

    def ready(self) -> None:
        """Wait until the qemu just launched answers on its monitor, and take in what it
        says; a qemu that fails (it exits: a kernel it cannot load) is gone, and its
        launch undone. At once when there is nothing to wait for."""
        if self._opening is None:
            return
        with self._readying:
            opening = self._opening
            if opening is None:
                return
            try:
                self._attach(opening, fresh=True)
            except BaseException as error:
                launched = self._process
                if launched is None:
                    raise
                raise self._undo_launch(launched, error) from None
            finally:
                with self._lock:
                    self._opening = None

    def _undo_launch(self, launched: subprocess.Popen[bytes],
                     error: BaseException) -> BaseException:
        """Stop the qemu whose launch failed with ``error`` and forget it, as if it never
        ran; the error to raise: qemu's own words if it exited by itself."""
        with self._lock:
            self._destroying = True  # what the closing monitor says is no news
            qmp, self._qmp = self._qmp, None
            opening, self._opening = self._opening, None
        if qmp is not None:
            qmp.close()
        if opening is not None:
            opening.abandon()
        process.stop_launched(launched)
        with self._lock:
            self._destroying, self._process = False, None
            self._update(pid=0, started=0, accel="", image=None)
        if isinstance(error, XendError) and launched.returncode not in (None, -signal.SIGKILL):
            return HypervisorError(f"qemu exited with status {launched.returncode} at "
                                   f"launch: {process.log_tail(self.paths)}")
        return error

    def adopt(self) -> None:
        """Take over the qemu a previous xend launched, alive or not."""
        st = self._state
        with self._lock:
            self._ran_since = time.monotonic() - AGENT_GRACE  # it has had its time to boot
        if process.alive(st.pid, st.started):
            try:
                self._attach(self._open_monitor(), fresh=False)
            except XendError as error:
                log.error("Cannot take over the qemu of domain %s (pid %s): %s; it is "
                          "reported crashed", st.domid, st.pid, error)
                self.update(exit=Reason.CRASH)
            self._say(f"domain {st.domid} adopted: {st.name}, qemu pid {st.pid}")
        else:
            with self._lock:
                if st.exit in (None, Reason.SUSPEND):
                    self._update(exit=Reason.CRASH)
            self._say(f"domain {st.domid} found dead: {st.name}, qemu pid {st.pid} is gone")

    def _open_monitor(self) -> Opening:
        """Connect the monitor and ask what ``_attach`` learns, in one write."""
        return Qmp.open(self.paths.qmp, timeout=self.timeout, on_event=self._on_event,
                        on_close=self._on_monitor_closed, asking=ATTACH_QUERIES)

    def _attach(self, opening: Opening, *, fresh: bool) -> None:
        """Finish connecting the monitor and learn what qemu is doing; a ``fresh`` qemu
        also gets the domain's pinning and scheduling (an adopted one kept them with its
        threads)."""
        qmp, answers = opening.finish()
        with self._lock:
            self._qmp = qmp
        for answer in answers[:3]:
            if isinstance(answer, XendError):
                raise answer
        status = answers[0]["status"]
        threads = tuple(int(cpu["thread-id"]) for cpu in answers[1])
        agent_open = any(c.get("label") == process.CONTROL_CHARDEV and c.get("frontend-open")
                         for c in answers[2])
        # A QmpError: no balloon driver in the guest (yet).
        balloon = None if isinstance(answers[3], XendError) else \
            int(answers[3]["actual"]) // 1024
        with self._lock:
            self._vcpu_threads = threads
            self._balloon_kb = balloon
            self._paused = status != "running"
            if status == "shutdown" and self._state.exit is None:
                self._update(exit=self._exit_from_trace())
            elif status == "guest-panicked":
                self._update(exit=Reason.CRASH)
        if agent_open:
            self._agent_up.set()
        if fresh and self._state.cpu >= 0:
            self._pin()
        if fresh and self._state.sched:
            self._apply_sched(list(self._state.sched))
        if qmp.closed:  # it went while we looked, and nobody has said so yet
            self._on_monitor_closed()

    def _exit_from_trace(self) -> Reason:
        """How a guest ended while nobody listened: the last shutdown request qemu traced."""
        try:
            text = self.paths.trace.read_text(errors="replace")
        except OSError:
            text = ""
        causes = re.findall(r"qemu_system_shutdown_request reason=(\d+)", text)
        if causes and int(causes[-1]) < len(SHUTDOWN_CAUSES):
            return GUEST_EXITS.get(SHUTDOWN_CAUSES[int(causes[-1])], Reason.CRASH)
        return Reason.POWEROFF

    # --- running -----------------------------------------------------------------------------

    def pause(self, quiet: bool = False) -> None:
        """Stop the guest; ``quiet``: its caller tells the driver's watchers what it reads
        of the domain after (the Domain's announce), so qemu's STOP is no news to them."""
        if not self._state.built or self._state.exit is not None:
            return  # not running anyway
        with self._quietly(quiet):
            self._monitor().execute("stop")
            self._set_paused(True)

    def unpause(self, quiet: bool = False) -> bool:
        """Let it run; whether this is the first time it runs since its launch.
        ``quiet``: as ``pause``'s."""
        what = f"cannot unpause domain {self.domid}"
        if not self._state.built:
            raise Conflict(f"{what}: it has not been built")
        ended = self._state.exit
        if ended is Reason.CRASH:
            raise Conflict(f"{what}: it has crashed")
        if ended is not None and ended is not Reason.SUSPEND:
            raise Conflict(f"{what}: it has shut down ({ended.value})")
        # qemu says RESUME as it starts the guest (its devices' start and the vCPUs
        # follow at once); after a restore or migration in, its answer came 10-25 ms
        # later, behind what the started guest's devices do, where a bare qemu's came
        # within 1-2 ms: the guest runs from RESUME.
        self._resumed.clear()
        with self._quietly(quiet):
            self._monitor().execute("cont", until=self._resumed)
            with self._lock:
                if ended is Reason.SUSPEND:
                    self._update(exit=None)
                first = self._ran_since is None
                if first:
                    self._ran_since = time.monotonic()
            self._set_paused(False)
        return first

    @contextlib.contextmanager
    def _quietly(self, quiet: bool) -> Iterator[None]:
        """While the body runs, a change of the paused flag alone is not told (qemu's
        STOP or RESUME said before its answer, or the flag set after): the caller reads the
        domain after and tells that. Anything else qemu says meanwhile is told as ever."""
        if not quiet:
            yield
            return
        with self._lock:
            self._quiet += 1
        try:
            yield
        finally:
            with self._lock:
                self._quiet -= 1

    def is_paused(self) -> bool:
        with self._lock:
            return self._paused

    def slot_arguments(self, *keys: str) -> dict[str, str]:
        """``device_add`` arguments that put a device in the PCI slot it had where the
        guest's state comes from (none for a new guest): the state needs it there. The
        device is known by the first of ``keys`` the saved machine has."""
        slot = next((self.slots[key] for key in keys if key in self.slots), None)
        return {} if slot is None else {"addr": f"{slot:#x}"}

    def runs(self) -> bool:
        """Whether its qemu is up and its guest neither shut down nor being destroyed."""
        with self._lock:
            return (self._state.built and self._state.exit is None and not self._destroying
                    and not self._going and not self.state_sent and self._qmp is not None
                    and not self._qmp.closed
                    and process.alive(self._state.pid, self._state.started))

    def execute(self, command: str, arguments: dict | None = None,
                fd: int | None = None, timeout: float | None = None) -> Any:
        """Run a QMP command on this domain's qemu (the device backends' and transfers'
        way in); ``fd`` goes with it, for ``getfd``; ``timeout``: the monitor's own."""
        return self._monitor().execute(command, arguments, fd=fd, timeout=timeout)

    def execute_all(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` in order without a round trip each (``Qmp.execute_all``)."""
        return self._monitor().execute_all(commands)

    def expect_migration(self) -> None:
        """A migration is about to start: what qemu said of an earlier one is past."""
        with self._lock:
            self.migration_status = ""
            self.migration_changed.clear()

    def going(self) -> None:
        """It is about to be destroyed: what it holds is let go without asking the guest."""
        with self._lock:
            self._going = True

    def destroy(self) -> None:
        """Stop qemu (``quit``, else SIGKILL) and remove everything of the domain's."""
        with self._lock:
            self._destroying = True
            qmp, console = self._qmp, self._console
            opening, self._opening = self._opening, None
        if opening is not None:  # its monitor not answering yet: nobody to ask to quit
            opening.abandon()
        st = self._state
        if st.built and process.alive(st.pid, st.started):
            if opening is not None:
                process.kill(st.pid, st.started, self._process)
            elif qmp is not None and not qmp.closed:
                with contextlib.suppress(XendError):
                    qmp.execute("quit", timeout=QUIT_TIMEOUT)
            if not process.wait_gone(st.pid, st.started, self._process, QUIT_TIMEOUT):
                process.kill(st.pid, st.started, self._process)
        if qmp is not None:
            qmp.close()
        _close_quietly(console)
        if st.cgroup:
            cgroup.remove(Path(st.cgroup))
        shutil.rmtree(self.paths.folder, ignore_errors=True)

    def close(self) -> None:
        """Let go of qemu; it keeps running for the next xend to adopt."""
        with self._lock:
            self._destroying = True  # what the closing monitor says is no news
            qmp, console = self._qmp, self._console
            opening, self._opening = self._opening, None
        if opening is not None:
            opening.abandon()
        if qmp is not None:
            qmp.close()
        _close_quietly(console)

    def _monitor(self) -> Qmp:
        self.ready()
        qmp = self._qmp
        if qmp is None or qmp.closed:
            raise HypervisorError(f"domain {self.domid} has no running qemu")
        return qmp

    def _set_paused(self, paused: bool) -> None:
        with self._lock:
            changed, self._paused = self._paused != paused and not self._quiet, paused
        if changed:
            self._changed(self.domid)

    # --- what qemu says ----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        changed = False
        with self._lock:
            if self._destroying:
                return
            if event.name == "STOP":
                changed, self._paused = not self._paused and not self._quiet, True
            elif event.name == "RESUME":
                changed, self._paused = self._paused and not self._quiet, False
                self._resumed.set()
                if self._ran_since is None:
                    self._ran_since = time.monotonic()
            elif event.name in ("SHUTDOWN", "GUEST_PANICKED"):
                cause = str(event.data.get("reason", "guest-panic"))
                if self._state.exit in (None, Reason.SUSPEND):
                    self._update(exit=GUEST_EXITS.get(cause, Reason.CRASH))
                    changed = True
                    log.info("Domain %s: qemu says %s (%s)", self.domid, event.name, cause)
            elif event.name == "VSERPORT_CHANGE" and event.data.get("id") == (
                    process.CONTROL_DEVICE):
                if event.data.get("open"):
                    self._agent_gone = False
                    self._agent_up.set()
                else:
                    self._agent_gone = True
                    self._agent_up.clear()
            elif event.name in ("MIGRATION", "MIGRATION_PASS"):
                if event.name == "MIGRATION":
                    self.migration_status = str(event.data.get("status", ""))
                self.migration_changed.set()
            elif event.name == "BALLOON_CHANGE":
                self._balloon_kb = int(event.data.get("actual", 0)) // 1024
        if changed:
            self._changed(self.domid)

    def _on_monitor_closed(self) -> None:
        """The monitor closed without xend destroying the domain: qemu died."""
        st = self._state
        if self._destroying or not st.built:
            return
        gone = process.wait_gone(st.pid, st.started, self._process, QUIT_TIMEOUT)
        with self._lock:
            if self._destroying:
                return
            if self._state.exit in (None, Reason.SUSPEND):
                self._update(exit=Reason.CRASH)
        log.error("The qemu of domain %s (pid %s) %s: %s", self.domid, st.pid,
                  "died" if gone else "closed its monitor", process.log_tail(self.paths))
        self._say(f"domain {self.domid}: qemu pid {st.pid} died; domain crashed")
        self._changed(self.domid)

    # --- shutdown requests -------------------------------------------------------------------

    def shutdown(self, reason: Reason, command: str) -> None:
        """Send ``command`` to the agent, now or once it is up; else press ACPI's button."""
        what = f"cannot ask domain {self.domid} to shut down for {reason.value}"
        if not self._state.built or self._state.exit is not None:
            raise Conflict(f"{what}: it is not running")
        if self._agent_up.is_set():
            self._deliver(reason, command)
        elif self._agent_may_come():
            threading.Thread(target=self._deliver_later, args=(reason, command),
                             name=f"shutdown-{self.domid}", daemon=True).start()
        elif reason in ACPI_REASONS:
            self._acpi_powerdown(reason)
        else:
            raise HypervisorError(f"{what}: it has no control agent (only poweroff, halt and "
                                  "reboot can go through ACPI)")

    def _agent_may_come(self) -> bool:
        """Whether the guest may still be booting towards its agent."""
        with self._lock:
            ran_since, gone = self._ran_since, self._agent_gone
        return not gone and (ran_since is None or time.monotonic() - ran_since < AGENT_GRACE)

    def _deliver(self, reason: Reason, command: str) -> None:
        try:
            with self._agent_lock:
                answer = agent.request(self.paths.control, command, AGENT_TIMEOUT)
        except XendError as error:
            if reason not in ACPI_REASONS:
                raise
            log.warning("Domain %s: the agent did not take %s (%s); trying ACPI",
                        self.domid, command, error)
            self._acpi_powerdown(reason)
            return
        if not answer.startswith("ok"):
            raise HypervisorError(f"the agent of domain {self.domid} refused {command}: "
                                  f"{answer}")
        self._say(f"domain {self.domid}: agent took {command}")
        if reason is Reason.SUSPEND:
            self._monitor().execute("stop")
            with self._lock:
                self._paused = True
                self._update(exit=Reason.SUSPEND)
            self._changed(self.domid)

    def _deliver_later(self, reason: Reason, command: str) -> None:
        while not self._agent_up.wait(0.5):
            if self._destroying or self._state.exit is not None:
                return
            if not self._agent_may_come():
                break
        try:
            if self._agent_up.is_set():
                self._deliver(reason, command)
            elif reason in ACPI_REASONS:
                self._acpi_powerdown(reason)
            else:
                log.error("Domain %s never started its control agent: %s not delivered",
                          self.domid, command)
        except XendError as error:
            log.error("Domain %s: %s not delivered: %s", self.domid, command, error)

    def _acpi_powerdown(self, reason: Reason) -> None:
        self._monitor().execute("system_powerdown")
        self._say(f"domain {self.domid}: ACPI power button pressed ({reason.value})")

    # --- memory, cpus, scheduling ------------------------------------------------------------

    def set_memory_target(self, memory_mb: int) -> None:
        self._monitor().execute("balloon", {"value": memory_mb * 1024 * 1024})

    def pin(self, cpu: int) -> None:
        self.update(cpu=cpu)
        if self._state.built and self._vcpu_threads:
            self._pin()

    def _pin(self) -> None:
        cpu = self._state.cpu
        cpus = set(range(os.cpu_count() or 1)) if cpu < 0 else {cpu}
        for tid in self._vcpu_threads:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError as error:
                raise HypervisorError(f"cannot pin vcpu thread {tid} of domain {self.domid}: "
                                      f"{error.strerror}") from None

    def set_sched(self, params: SchedParams) -> None:
        cpu_shape(params)  # a bad value fails before anything is recorded
        with self._lock:
            kept = tuple(p for p in self._state.sched if type(p) is not type(params))
            self._update(sched=(*kept, params))
        st = self._state
        if st.built and process.alive(st.pid, st.started):
            self._apply_sched([params])

    def _apply_sched(self, params: list[SchedParams]) -> None:
        for one in params:
            shape = cpu_shape(one)
            group = cgroup.apply(self._hierarchy, self._state.pid, weight=shape.weight,
                                 cap=shape.cap, uncapped=shape.uncapped,
                                 what=f"the {shape.describe()} of domain {self.domid}")
            if self._state.cgroup != str(group):
                self.update(cgroup=str(group))

    # --- the console -------------------------------------------------------------------------

    def open_console(self) -> socket.socket:
        if not self._state.built:
            raise Conflict(f"domain {self.domid} has no console yet: it has not been built")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.paths.console))
            sock.settimeout(None)
        except OSError as error:
            sock.close()
            raise HypervisorError(f"cannot connect to the console of domain {self.domid} at "
                                  f"{self.paths.console}: {error.strerror or error}") from None
        # qemu serves one client at a time: the earlier connection must go for this one
        # to be served. A dup, since the caller closes its socket when it likes.
        with self._lock:
            previous, self._console = self._console, sock.dup()
        _close_quietly(previous)
        return sock


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def mac_key(mac: str) -> str:
    """The key of a nic in ``QemuGuest.slots``: its MAC, which a transfer keeps."""
    return f"mac={mac.lower()}"
