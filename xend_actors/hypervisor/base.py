"""The hypervisor driver interface: what xend needs of Xen, for both drivers.

Modelled on Xen's ``xc`` calls (DESIGN.md §4): create an empty paused domain,
build it from a kernel image, pause, unpause, destroy, ask it to shut down, list
domains with their states, set memory and scheduling, and be told the moment a
domain changes state (Xen's VIRQ_DOM_EXC). Domain 0 is the host itself and is
listed like any domain. A call the hypervisor cannot honour raises ``XendError``
with a sentence that says so; an unknown domain raises ``NotFound``.

A driver must be safe to call from several threads at once: the Hypervisor actor
makes the host-wide calls and each Domain actor its own domain's calls.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, Flag, auto
from typing import Protocol, runtime_checkable

from xend_actors.hypervisor.ring.messages import Message
from xend_actors.node import PhysInfo


class ShutdownReason(Enum):
    """Why a domain shuts down: what xend asks for, and what a domain reports.

    A domain reports only POWEROFF, REBOOT, SUSPEND (and SYSRQ never); HALT is a
    xend-only word sent as POWEROFF that cancels any restart (facts §6); CRASH
    appears only in the ``xend.domain.exit`` event of a crashed domain.
    """

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    SUSPEND = "suspend"
    HALT = "halt"
    SYSRQ = "sysrq"
    CRASH = "crash"

    @property
    def code(self) -> int:
        """The CMSG_SHUTDOWN subtype that carries this request to the guest."""
        return _SHUTDOWN_CODES[self]


_SHUTDOWN_CODES = {
    ShutdownReason.POWEROFF: 0,
    ShutdownReason.HALT: 0,
    ShutdownReason.REBOOT: 1,
    ShutdownReason.SUSPEND: 2,
    ShutdownReason.SYSRQ: 3,
}


class DomainState(Flag):
    """The hypervisor's flags for one domain (facts §6); ``DomainState(0)``: none set."""

    RUNNING = auto()
    BLOCKED = auto()
    PAUSED = auto()
    SHUTDOWN = auto()
    CRASHED = auto()
    DYING = auto()

    @classmethod
    def of(cls, *, running: bool = False, blocked: bool = False, paused: bool = False,
           shutdown: bool = False, crashed: bool = False, dying: bool = False) -> DomainState:
        """The flags given as words, as a driver reads them off its domain."""
        state = cls(0)
        for flag, on in ((cls.RUNNING, running), (cls.BLOCKED, blocked), (cls.PAUSED, paused),
                         (cls.SHUTDOWN, shutdown), (cls.CRASHED, crashed), (cls.DYING, dying)):
            if on:
                state |= flag
        return state

    @property
    def running(self) -> bool:
        return DomainState.RUNNING in self

    @property
    def blocked(self) -> bool:
        return DomainState.BLOCKED in self

    @property
    def paused(self) -> bool:
        return DomainState.PAUSED in self

    @property
    def shutdown(self) -> bool:
        return DomainState.SHUTDOWN in self

    @property
    def crashed(self) -> bool:
        return DomainState.CRASHED in self

    @property
    def dying(self) -> bool:
        return DomainState.DYING in self

    @property
    def letters(self) -> str:
        """The five-letter ``state`` of domain info: ``rbpsc`` with ``-`` for clear flags."""
        return "".join(letter if flag in self else "-" for letter, flag in _LETTERS[:5])

    @property
    def dead(self) -> bool:
        """Dead as the reaper sees it: crashed, shut down, or dying and not alive (looked
        up: the reaper asks it of every domain at each refresh)."""
        return self._value_ in _DEAD


def _dead(state: DomainState) -> bool:
    alive = state & (DomainState.RUNNING | DomainState.PAUSED | DomainState.BLOCKED)
    return state.crashed or state.shutdown or (state.dying and not alive)


_DEAD = frozenset(value for value in range(1 << len(DomainState))
                  if _dead(DomainState(value)))
_LETTERS = tuple(zip("rbpscd", DomainState, strict=True))


@dataclass(frozen=True)
class HvDomain:
    """One domain as the hypervisor reports it."""

    domid: int
    name: str
    state: DomainState
    shutdown_reason: ShutdownReason | None
    memory_kb: int
    maxmem_kb: int
    vcpus: int
    cpu: int
    cpu_time: float  # seconds


@dataclass(frozen=True, slots=True)
class VbdCounters:
    """One vbd's work since it was plugged in, as its backend counts it (``vdev``: the
    device number the guest sees)."""

    vdev: int
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


@dataclass(frozen=True, slots=True)
class VifCounters:
    """One vif's traffic as the guest sees it: ``tx`` what the guest sent (its backend
    link received), ``rx`` what it was sent."""

    handle: int
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True, slots=True)
class DomainCounters:
    """One domain in a batched sample: the hypervisor's reading and its devices' counters."""

    domain: HvDomain
    vbds: tuple[VbdCounters, ...] = ()
    vifs: tuple[VifCounters, ...] = ()


@dataclass(frozen=True)
class LinuxImage:
    """What ``build`` loads into an empty domain: kernel, ramdisk and command line."""

    kernel: str
    ramdisk: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class BvtParams:
    mcuadv: int
    warpback: int
    warpvalue: int
    warpl: int
    warpu: int


@dataclass(frozen=True)
class FbvtParams:
    mcuadv: int
    warp: int
    warpl: int
    warpu: int


@dataclass(frozen=True)
class AtroposParams:
    period: int
    slice: int
    latency: int
    xtratime: int


SchedParams = BvtParams | FbvtParams | AtroposParams


@dataclass(frozen=True)
class DomainChanged:
    """The driver's notification: this domain's state changed (or it vanished)."""

    domid: int


@dataclass(frozen=True)
class GuestMessage:
    """The driver's notification: a guest sent xend a control message (a frontend's
    request, facts §9.5-§9.6)."""

    domid: int
    message: Message


Notification = DomainChanged | GuestMessage


@dataclass(frozen=True)
class StreamProgress:
    """How far ``send_state`` is: bytes sent of those known to go; ``stopped`` once the
    guest no longer runs (the last part of a live migration, or all of a save)."""

    stopped: bool
    sent: int
    total: int


@dataclass(frozen=True)
class StreamResult:
    """What ``send_state`` did: ``stopped_at`` is when the guest stopped running
    (``time.monotonic()``), ``sent`` the bytes of the stream."""

    stopped_at: float
    sent: int


class Driver(Protocol):
    """A hypervisor driver; every call raises ``XendError`` when it cannot be done.

    Its domains' state moves (save, restore, migration) through one of two further
    protocols, which a driver has beside this one: ``PagedState`` or ``StreamState``.
    """

    kind: str  # "sim", "qemu": names the driver in save files and migration offers

    def physinfo(self) -> PhysInfo: ...

    def list_domains(self) -> list[HvDomain]: ...

    def domain(self, domid: int) -> HvDomain: ...

    def counters(self) -> list[DomainCounters]:
        """Every domain with its devices' counters, read in one batch (the sampler's one
        call a period: no round trip per domain)."""
        ...

    def create(self, name: str, memory_mb: int, *, vcpus: int = 1, cpu: int = -1,
               domid: int | None = None, image: LinuxImage | None = None) -> int:
        """An empty, paused domain; ``domid`` asks for a given id (a restart keeps its id).
        ``image``: the one ``build`` will load, which a driver may start loading now (a
        qemu makes its machine meanwhile); ``build`` still follows, and completes it."""
        ...

    def build(self, domid: int, image: LinuxImage) -> None:
        """Load the image; the domain may still be getting ready when this returns (a
        qemu making its machine), in which case its console can already be opened."""
        ...

    def ready(self, domid: int) -> None:
        """Wait until the domain just built is whole; its hypervisor's failure to make
        it is raised here at the latest."""
        ...

    def pause(self, domid: int) -> None: ...

    def unpause(self, domid: int) -> None: ...

    def destroying(self, domid: int) -> None:
        """Domain ``domid`` is about to be destroyed: its devices may be let go without the
        guest's say (a real guest would otherwise be asked to let go of each)."""
        ...

    def destroy(self, domid: int) -> None: ...

    def shutdown(self, domid: int, reason: ShutdownReason, key: str = "") -> None:
        """Ask the guest to shut down (a CMSG_SHUTDOWN message); returns at once."""
        ...

    def resume(self, domid: int) -> None:
        """Undo the suspend of domain ``domid`` (sim) or the stop after ``send_state``
        (qemu) when it is not saved or moved after all: the guest runs on where it
        stopped."""
        ...

    def set_maxmem(self, domid: int, memory_mb: int) -> None: ...

    def set_memory_target(self, domid: int, memory_mb: int) -> None: ...

    def pincpu(self, domid: int, cpu: int) -> None: ...

    def set_sched(self, domid: int, params: SchedParams) -> None: ...

    def sched(self, domid: int) -> list[SchedParams]:
        """The scheduler parameters last set for the domain."""
        ...

    def set_bvt_ctx_allow(self, ctx_allow: int) -> None: ...

    def set_rrobin_slice(self, slice_ns: int) -> None: ...

    def dmesg(self, clear: bool = False) -> str:
        """The hypervisor's console ring; ``clear`` empties it after reading."""
        ...

    def send_control(self, domid: int, message: Message) -> Message:
        """Send a control message to domain ``domid``; returns the response.

        Backend requests (CMSG_BLKIF_BE, CMSG_NETIF_BE) go to the backend domain, 0, and
        name the frontend domain inside; frontend messages go to the guest. A backend's
        non-OK status comes back in the response: ``device.messages.check`` raises it.
        """
        ...

    def attach_backing(self, path: str, readonly: bool = False, shared: bool = False) -> int:
        """Make a host file or block device available to the block backend (Xen's
        ``losetup`` of ``file:``); returns its device number for vbd extents. ``shared``
        (mode ``w!``): the user lets other guests use it too, so a backend that locks
        its images leaves this one unlocked."""
        ...

    def detach_backing(self, device: int) -> None: ...

    def open_console(self, domid: int) -> socket.socket:
        """A new connection to the domain's console: raw bytes both ways, one reader at a
        time (a new connection replaces the old); it closes when the domain goes."""
        ...

    def watch(self, notify: Callable[[Notification], None]) -> None:
        """Call ``notify`` (from a driver thread) whenever a domain changes state or a
        guest sends xend a control message."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class PagedState(Protocol):
    """A driver whose domain state is bytes xend can hold (the sim), and whose memory
    moves in pages of 4096 bytes (``xfr.PAGE_SIZE``) for a live migration."""

    def save_state(self, domid: int) -> bytes:
        """The hypervisor's state of domain ``domid``, which must be suspended (shut down
        for suspend): the payload of a save image (facts §10). The domain stays as it is."""
        ...

    def restore_state(self, name: str, memory_mb: int, state: bytes) -> int:
        """A new paused domain built from ``state`` (what ``save_state`` gave) instead of
        from an image; returns its id. Unpausing it lets the saved guest run on."""
        ...

    def memory_pages(self, domid: int) -> int:
        """How many pages of memory domain ``domid`` has."""
        ...

    def dirty_pages(self, domid: int) -> list[int]:
        """The pages domain ``domid`` wrote since the last call (its dirty log), sorted;
        the log then starts afresh. A migration's pre-copy resends these."""
        ...

    def read_pages(self, domid: int, first: int, count: int) -> bytes:
        """Pages ``first`` .. ``first + count - 1`` of domain ``domid``, back to back."""
        ...


@runtime_checkable
class StreamState(Protocol):
    """A driver whose domain state is a stream too big to hold (qemu's migration stream):
    the caller pumps the other end of the pipe ``fd`` belongs to (into a save file, or
    over the relocation connection), on a thread of its own for ``send_state``."""

    def describe(self, domid: int) -> bytes:
        """What a destination must know to make the same machine before the state comes
        (a save file's and a migration offer's meta)."""
        ...

    def send_state(self, domid: int, fd: int, *, live: bool, mbit: int,
                   progress: Callable[[StreamProgress], None]) -> StreamResult:
        """Write domain ``domid``'s state into ``fd`` (a pipe's write end; the caller
        keeps and closes its copy); returns once all of it is written and the guest is
        stopped (not destroyed). ``live``: it runs meanwhile until the last bit; else it
        stops first. ``mbit``: at most that many Mbit/s (0: no limit). On failure the
        guest runs again if it ran before."""
        ...

    def prepare_incoming(self, name: str, meta: bytes) -> int:
        """A new paused domain made as ``meta`` says, waiting for its state; its id.
        Its devices can be configured before the state comes."""
        ...

    def receive_state(self, domid: int, fd: int) -> None:
        """Start loading domain ``domid``'s state from ``fd`` (a pipe's read end; the
        caller keeps and closes its copy); returns at once."""
        ...

    def wait_received(self, domid: int, timeout: float) -> None:
        """Wait until the state is loaded (the writer closed its end); the domain stays
        paused. XendError if it failed, or it takes over ``timeout`` seconds."""
        ...
