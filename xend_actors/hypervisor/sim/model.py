"""The simulated hypervisor: domains, their ids, memory, flags, cpu time and the log ring.

``SimHypervisor`` is what xend-simhv serves. It is plain Python driven by an injected
clock, so tests run it without processes or sleeps. It keeps Xen's rules (facts §6,
§7): Domain-0 is domain 0 and is listed like any domain; a new domain is empty and
paused; ids come from a counter that skips ids in use; memory must fit what is free;
a domain that shuts down or crashes stays listed until it is destroyed; a domain
runs on the cpu it is pinned to, else on the one that had the fewest domains when it
was made (Xen's first placement), and says so in its reading's ``cpu``. Listeners
hear of every change of a domain's flags (Xen's VIRQ_DOM_EXC), not of the
running/blocked toggles of a guest at work.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound
from xend_actors.hypervisor.base import (
    AtroposParams,
    BvtParams,
    DomainCounters,
    DomainState,
    FbvtParams,
    HvDomain,
    LinuxImage,
    SchedParams,
    ShutdownReason,
)
from xend_actors.hypervisor.checks import check_cpu, check_create, check_memory_free
from xend_actors.hypervisor.ring.messages import Message, MessageType
from xend_actors.hypervisor.sim.blkback import Backing, BlockBackend
from xend_actors.hypervisor.sim.clock import Clock, Meter
from xend_actors.hypervisor.sim.console import Console
from xend_actors.hypervisor.sim.guest import IDLE_LOAD, Guest
from xend_actors.hypervisor.sim.memory import PAGE_SIZE
from xend_actors.hypervisor.sim.netback import NetBackend
from xend_actors.node import PhysInfo

DOM0_NAME = "Domain-0"
DOM0_MEMORY_MB = 512
DOMID_FIRST_RESERVED = 0x7FF0  # ids from here up are Xen's own (DOMID_SELF, DOMID_IO, ...)
CPU_MHZ = 2000
DMESG_LIMIT = 16 * 1024

ControlHandler = Callable[[int, Message], Message]
BackendHandler = Callable[[Message], Message]


@dataclass(eq=False)
class _Domain:
    domid: int
    name: str
    memory_kb: int
    maxmem_kb: int
    vcpus: int
    cpu: int  # the cpu it is pinned to; -1: any
    processor: int  # the cpu it runs on (or last ran on): its pin, or where it was placed
    guest: Guest | None = None  # None for Domain-0: the host itself
    paused: bool = True
    shutdown_reason: ShutdownReason | None = None
    crashed: bool = False
    sched: dict[type, SchedParams] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        built = self.guest is None or self.guest.image is not None
        return built and not self.paused and self.shutdown_reason is None and not self.crashed

    def state(self) -> DomainState:
        runs = self.runnable
        busy = self.guest is None or self.guest.busy
        return _state(runs and busy, runs and not busy, self.paused,
                      self.shutdown_reason is not None, self.crashed)


# There are few states and many domains: each is made once.
@functools.cache
def _state(running: bool, blocked: bool, paused: bool, shutdown: bool,
           crashed: bool) -> DomainState:
    return DomainState.of(running=running, blocked=blocked, paused=paused,
                          shutdown=shutdown, crashed=crashed)


class SimHypervisor:
    def __init__(self, memory_mb: int, cpus: int, clock: Clock, *,
                 shutdown_delay: float = 0.03, taps: bool = False,
                 first_domid: int = 1) -> None:
        if memory_mb <= DOM0_MEMORY_MB:
            raise BadRequest(f"the simulated host needs more than {DOM0_MEMORY_MB} MiB of "
                             f"memory (Domain-0 alone has {DOM0_MEMORY_MB} MiB), got {memory_mb}")
        if cpus < 1:
            raise BadRequest(f"the simulated host needs at least 1 cpu, got {cpus}")
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.bvt_ctx_allow = 0
        self.rrobin_slice_ns = 0
        # Domain-0's block backend; it answers CMSG_BLKIF_BE sent to domain 0.
        self.block = BlockBackend(lambda domid: domid in self._domains)
        # Domain-0's network backend; with ``taps`` its links are real tap devices.
        self.net = NetBackend(lambda domid: domid in self._domains, taps=taps)
        # Control messages by type: to a guest, or to a backend in domain 0.
        self.control_handlers: dict[int, ControlHandler] = {
            MessageType.SHUTDOWN: self._to_guest,
            MessageType.BLKIF_FE: self._to_guest,
            MessageType.NETIF_FE: self._to_guest,
            MessageType.BLKIF_BE: partial(self._to_backend, self.block.handle, "block"),
            MessageType.NETIF_BE: partial(self._to_backend, self.net.handle, "network"),
        }
        self._control_listeners: list[Callable[[int, Message], None]] = []
        self._clock = clock
        self._shutdown_delay = shutdown_delay
        self._listeners: list[Callable[[int], None]] = []
        self._dmesg: deque[str] = deque()
        self._dmesg_size = 0
        # A helper started again after one died begins past the ids xend still knows,
        # so a new domain never takes the id of one whose end xend is still handling.
        self._next_domid = first_domid if 0 < first_domid < DOMID_FIRST_RESERVED else 1
        self._host_cpu = Meter(clock, rate=IDLE_LOAD)
        dom0 = _Domain(0, DOM0_NAME, DOM0_MEMORY_MB * 1024, memory_mb * 1024, cpus, 0, 0,
                       paused=False)
        self._placed: Counter[int] = Counter([0])  # domains on each cpu
        self._domains: dict[int, _Domain] = {0: dom0}
        self._names: Counter[str] = Counter([DOM0_NAME])  # the sim lets two share a name
        self._used_kb = dom0.memory_kb
        self._log(f"Xen version 2.0 (xend-simhv): {memory_mb} MiB of memory, {cpus} cpus")
        self._log(f"domain 0 created: {DOM0_NAME}, {DOM0_MEMORY_MB} MiB")

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(domid)`` whenever a domain's flags change or it goes away."""
        self._listeners.append(listener)

    def add_control_listener(self, listener: Callable[[int, Message], None]) -> None:
        """Call ``listener(domid, message)`` for each control message a guest sends xend."""
        self._control_listeners.append(listener)

    # --- the host ------------------------------------------------------------------

    def physinfo(self) -> PhysInfo:
        return PhysInfo(cores=self.cpus, hyperthreads_per_core=1, cpu_mhz=CPU_MHZ,
                        memory_mb=self.memory_mb, free_memory_mb=self._free_mb())

    def list_domains(self) -> list[HvDomain]:
        return [self._info(self._domains[domid]) for domid in sorted(self._domains)]

    def domain(self, domid: int) -> HvDomain:
        return self._info(self._domain(domid))

    def counters(self) -> list[DomainCounters]:
        """Every domain with its vbds' and vifs' counters, in domid order."""
        vbds, vifs = self.block.counters(), self.net.counters()
        return [DomainCounters(self._info(self._domains[domid]), vbds.get(domid, ()),
                               vifs.get(domid, ()))
                for domid in sorted(self._domains)]

    def has_domain_named(self, name: str) -> bool:
        """Whether a domain is called ``name``, without listing them all."""
        return name in self._names

    def dmesg(self, clear: bool = False) -> str:
        text = "".join(self._dmesg)
        if clear:
            self._dmesg.clear()
            self._dmesg_size = 0
        return text

    def set_bvt_ctx_allow(self, ctx_allow: int) -> None:
        if ctx_allow < 0:
            raise BadRequest(f"bvt ctx_allow must be 0 or more, got {ctx_allow}")
        self.bvt_ctx_allow = ctx_allow
        self._log(f"bvt ctx_allow set to {ctx_allow}")

    def set_rrobin_slice(self, slice_ns: int) -> None:
        if slice_ns < 1:
            raise BadRequest(f"the round-robin slice must be at least 1 ns, got {slice_ns}")
        self.rrobin_slice_ns = slice_ns
        self._log(f"rrobin slice set to {slice_ns} ns")

    # --- a domain's life -------------------------------------------------------------

    def create(self, name: str, memory_mb: int, *, vcpus: int = 1, cpu: int = -1,
               domid: int | None = None) -> int:
        """An empty, paused domain; ``domid`` asks for that id."""
        what = f"cannot create domain {name}"
        check_create(what, memory_mb, vcpus, cpu, cpus=self.cpus)
        if domid is not None:
            self._check_domid_free(domid, what)
        check_memory_free(what, memory_mb, self._free_mb())
        if domid is None:
            domid = self._allocate_domid(what)
        dom = _Domain(domid, name, memory_mb * 1024, memory_mb * 1024, vcpus, cpu,
                      self._place(cpu))
        dom.guest = Guest(domid, self._clock, partial(self._guest_exit, dom),
                          shutdown_delay=self._shutdown_delay,
                          disks=self.block.disks_of(domid),
                          send=partial(self._from_guest, domid),
                          transmit=partial(self.net.transmit, domid))
        self._domains[domid] = dom
        self._names[name] += 1
        self._used_kb += dom.memory_kb
        self._log(f"domain {domid} created: {name}, {memory_mb} MiB")
        return domid

    def build(self, domid: int, image: LinuxImage) -> None:
        """Load the kernel, ramdisk and command line (recorded; the files are never read)."""
        guest = self._guest(domid, "build")
        if guest.image is not None:
            raise Conflict(f"cannot build domain {domid}: it is already built")
        if not image.kernel:
            raise BadRequest(f"cannot build domain {domid}: no kernel given")
        guest.image = image
        self._log(f"domain {domid} built: kernel {image.kernel}")

    def pause(self, domid: int) -> None:
        dom = self._not_dom0(domid, "pause")
        if not dom.paused:
            dom.paused = True
            self._changed(dom)

    def unpause(self, domid: int) -> None:
        dom = self._not_dom0(domid, "unpause")
        if dom.guest is not None and dom.guest.image is None:
            raise Conflict(f"cannot unpause domain {domid}: it has not been built")
        if dom.paused:
            dom.paused = False
            self._changed(dom)

    def destroy(self, domid: int) -> None:
        dom = self._not_dom0(domid, "destroy")
        del self._domains[domid]
        self._placed[dom.processor] -= 1
        # Not ``-= Counter(...)``: that walks every name, and a destroy would cost O(domains).
        self._names[dom.name] -= 1
        if not self._names[dom.name]:
            del self._names[dom.name]
        self._used_kb -= dom.memory_kb
        if dom.guest is not None:
            dom.guest.kill()
        self.block.domain_gone(domid)
        self.net.domain_gone(domid)
        self._log(f"domain {domid} destroyed")
        self._notify(domid)

    # --- save and restore --------------------------------------------------------------

    def save_state(self, domid: int) -> bytes:
        """The state of suspended domain ``domid``: what a save image carries."""
        dom = self._not_dom0(domid, "save")
        assert dom.guest is not None
        if dom.shutdown_reason is not ShutdownReason.SUSPEND or not dom.guest.suspended:
            raise Conflict(f"cannot save domain {domid}: it is not suspended")
        return dom.guest.export_state()

    def restore_state(self, name: str, memory_mb: int, state: bytes) -> int:
        """A new paused domain built from a saved ``state`` instead of an image; its id."""
        domid = self.create(name, memory_mb)
        guest = self._guest(domid, "restore")
        try:
            guest.load_state(state)
        except BadRequest:
            self.destroy(domid)
            raise
        self._log(f"domain {domid} restored from a saved state: {name}")
        return domid

    def resume(self, domid: int) -> None:
        """Undo the suspend of domain ``domid``: it runs on (a save that failed)."""
        dom = self._not_dom0(domid, "resume")
        assert dom.guest is not None
        if dom.shutdown_reason is not ShutdownReason.SUSPEND:
            raise Conflict(f"cannot resume domain {domid}: it is not suspended")
        dom.guest.resume()
        dom.shutdown_reason = None
        self._log(f"domain {domid} resumed")
        self._changed(dom)

    def memory_map(self, domid: int) -> tuple[int, int, dict[int, int]]:
        """Domain ``domid``'s memory: (seed, pages, versions of the pages written)."""
        dom = self._not_dom0(domid, "read the memory of")
        assert dom.guest is not None
        memory = dom.guest.memory
        return memory.seed, dom.memory_kb * 1024 // PAGE_SIZE, dict(memory.versions)

    def dirty_pages(self, domid: int) -> list[int]:
        """The pages domain ``domid`` wrote since the last call (its dirty log)."""
        return self._guest(domid, "read the dirty log of").memory.take_dirty()

    def send_control(self, domid: int, message: Message) -> Message:
        """Deliver a control message sent to domain ``domid``; returns the response.

        A shutdown request goes to the domain's guest; backend requests go to domain 0,
        whose backends serve the frontend domain named in the message.
        """
        self._domain(domid)
        handler = self.control_handlers.get(message.type)
        if handler is None:
            raise BadRequest(f"xend-simhv has no handler for control messages of type "
                             f"{int(message.type)}")
        return handler(domid, message)

    # --- block backings: the sim's losetup ----------------------------------------------

    def attach_backing(self, path: str, readonly: bool = False) -> int:
        """Attach a host file or device as a block device; its number, for vbd extents."""
        device = self.block.attach_backing(path, readonly)
        self._log(f"backing device {device:#06x} attached: {path} "
                  f"({'ro' if readonly else 'rw'})")
        return device

    def detach_backing(self, device: int) -> None:
        self.block.detach_backing(device)
        self._log(f"backing device {device:#06x} detached")

    def backings(self) -> list[Backing]:
        return self.block.backings()

    def console(self, domid: int) -> Console:
        return self._guest(domid, "open the console of").console

    # --- memory and scheduling ---------------------------------------------------------

    def set_maxmem(self, domid: int, memory_mb: int) -> None:
        dom = self._domain(domid)
        if memory_mb < 1:
            raise BadRequest(f"cannot set the maximum memory of domain {domid} to "
                             f"{memory_mb} MiB: it must be at least 1 MiB")
        dom.maxmem_kb = memory_mb * 1024

    def set_memory_target(self, domid: int, memory_mb: int) -> None:
        """The domain's memory becomes ``memory_mb`` (a balloon that follows at once)."""
        dom = self._domain(domid)
        what = f"cannot set the memory of domain {domid} to {memory_mb} MiB"
        if memory_mb < 1:
            raise BadRequest(f"{what}: it must be at least 1 MiB")
        if memory_mb * 1024 > dom.maxmem_kb:
            raise Conflict(f"{what}: its maximum is {dom.maxmem_kb // 1024} MiB")
        grow_kb = memory_mb * 1024 - dom.memory_kb
        if grow_kb > self._free_kb():
            raise HypervisorError(f"{what}: it needs {grow_kb // 1024} MiB more but only "
                                  f"{self._free_mb()} MiB are free")
        dom.memory_kb += grow_kb
        self._used_kb += grow_kb

    def pincpu(self, domid: int, cpu: int) -> None:
        dom = self._domain(domid)
        check_cpu(f"cannot pin domain {domid} to cpu {cpu}", cpu, cpus=self.cpus)
        dom.cpu = cpu
        if cpu >= 0:  # unpinned, it stays where it is until the scheduler moves it
            self._placed[dom.processor] -= 1
            dom.processor = self._place(cpu)

    def set_sched(self, domid: int, params: SchedParams) -> None:
        dom = self._domain(domid)
        if not isinstance(params, BvtParams | FbvtParams | AtroposParams):
            raise BadRequest(f"unknown scheduler parameters {params!r}")
        dom.sched[type(params)] = params

    def sched(self, domid: int) -> list[SchedParams]:
        return list(self._domain(domid).sched.values())

    # --- inside --------------------------------------------------------------------------

    def _domain(self, domid: int) -> _Domain:
        try:
            return self._domains[domid]
        except KeyError:
            raise NotFound(f"no domain {domid}") from None

    def _not_dom0(self, domid: int, action: str) -> _Domain:
        dom = self._domain(domid)
        if dom.guest is None:
            raise Conflict(f"cannot {action} {DOM0_NAME}: it is the host itself")
        return dom

    def _guest(self, domid: int, action: str) -> Guest:
        guest = self._not_dom0(domid, action).guest
        assert guest is not None
        return guest

    def _to_guest(self, domid: int, message: Message) -> Message:
        return self._guest(domid, "send a control message to").deliver(message)

    def _to_backend(self, handle: BackendHandler, kind: str, domid: int,
                    message: Message) -> Message:
        if domid != 0:
            raise BadRequest(f"domain {domid} runs no {kind} backend: send "
                             f"{type(message).__name__} to domain 0")
        return handle(message)

    def _from_guest(self, domid: int, message: Message) -> None:
        for listener in self._control_listeners:
            listener(domid, message)

    def _guest_exit(self, dom: _Domain, reason: ShutdownReason | None) -> None:
        if self._domains.get(dom.domid) is not dom:
            return
        if reason is None:
            dom.crashed = True
            self._log(f"domain {dom.domid} crashed")
        else:
            dom.shutdown_reason = reason
            self._log(f"domain {dom.domid} shut down: reason {reason.value}")
        self._changed(dom)

    def _changed(self, dom: _Domain) -> None:
        if dom.guest is not None:
            dom.guest.schedule(dom.runnable)
        self._notify(dom.domid)

    def _notify(self, domid: int) -> None:
        for listener in self._listeners:
            listener(domid)

    def _info(self, dom: _Domain) -> HvDomain:
        cpu_time = dom.guest.cpu.value() if dom.guest is not None else self._host_cpu.value()
        return HvDomain(domid=dom.domid, name=dom.name, state=dom.state(),
                        shutdown_reason=dom.shutdown_reason, memory_kb=dom.memory_kb,
                        maxmem_kb=dom.maxmem_kb, vcpus=dom.vcpus, cpu=dom.processor,
                        cpu_time=cpu_time)

    def _place(self, cpu: int) -> int:
        """The cpu a new or newly pinned domain runs on: its pin, else the cpu with the
        fewest domains (Xen's first placement), counted as placed there."""
        if cpu < 0:
            cpu = min(range(self.cpus), key=lambda one: (self._placed[one], one))
        self._placed[cpu] += 1
        return cpu

    def _free_kb(self) -> int:
        return self.memory_mb * 1024 - self._used_kb

    def _free_mb(self) -> int:
        return self._free_kb() // 1024

    def _check_domid_free(self, domid: int, what: str) -> None:
        if domid in self._domains:
            raise Conflict(f"{what}: domain id {domid} is in use")
        if not 0 < domid < DOMID_FIRST_RESERVED:
            raise BadRequest(f"{what}: domain id {domid} is out of range "
                             f"(1..{DOMID_FIRST_RESERVED - 1})")

    def _allocate_domid(self, what: str) -> int:
        for _ in range(DOMID_FIRST_RESERVED):
            domid = self._next_domid
            self._next_domid = domid + 1 if domid + 1 < DOMID_FIRST_RESERVED else 1
            if domid not in self._domains:
                return domid
        raise HypervisorError(f"{what}: every domain id is in use")

    def _log(self, text: str) -> None:
        line = f"(XEN) {text}\n"
        self._dmesg.append(line)
        self._dmesg_size += len(line)
        while self._dmesg_size > DMESG_LIMIT:
            self._dmesg_size -= len(self._dmesg.popleft())
