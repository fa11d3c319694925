"""SimDriver: xend's hypervisor driver for xend-simhv, one of the two ``base.Driver``\\s.

Calls from any number of threads share one connection: a writer lock orders the
request lines, and a reader thread hands each reply to the caller waiting for its
id (``rpc.Calls``). Every call has a timeout. When the connection is lost, the calls
waiting and every later call fail with a HypervisorError that says so, until
``reconnect`` (xend-simhv died and a new one was started: the Hypervisor actor's).
Watching and consoles get connections of their own, since they turn a connection into
a stream.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from xend_actors.errors import BadRequest, HypervisorError, Timeout, XendError
from xend_actors.hypervisor.base import (
    DomainCounters,
    HvDomain,
    LinuxImage,
    Notification,
    SchedParams,
    ShutdownReason,
)
from xend_actors.hypervisor.ring.messages import Message, MessageIds, Shutdown, ShutdownSubtype
from xend_actors.hypervisor.rpc import Calls, closed_on_error
from xend_actors.hypervisor.sim import memory, protocol
from xend_actors.hypervisor.sim.protocol import Args, Wire
from xend_actors.node import PhysInfo

log = logging.getLogger(__name__)


class SimDriver:
    kind = "sim"  # names its save files and migration offers

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock = self._connect()
        self._write_lock = threading.Lock()
        self._calls: Calls[Wire] = Calls(late=self._late, lost=lambda call: self._lost_error())
        self._msg_ids = MessageIds()
        self._lock = threading.Lock()  # guards the fields below
        self._closed = False
        self._streams: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(lambda: self._read_replies(self._sock, self._calls), "simhv-replies")

    @property
    def lost(self) -> bool:
        """Whether the connection to xend-simhv is gone (it died, or this driver closed)."""
        return self._calls.lost

    def reconnect(self) -> None:
        """Calls on a new connection (a new xend-simhv answers); ``watch`` again after."""
        with self._lock:
            if self._closed:
                raise self._lost_error()
        sock = self._connect()
        calls: Calls[Wire] = Calls(late=self._late, lost=lambda call: self._lost_error())
        with self._write_lock:
            self._sock, self._calls = sock, calls
        self._start(lambda: self._read_replies(sock, calls), "simhv-replies")

    # --- base.Driver ---------------------------------------------------------------

    def physinfo(self) -> PhysInfo:
        return protocol.physinfo_from_wire(self._call("physinfo"))

    def list_domains(self) -> list[HvDomain]:
        return [protocol.domain_from_wire(wire) for wire in self._call("list")]

    def domain(self, domid: int) -> HvDomain:
        return protocol.domain_from_wire(self._call("domain", domid=domid))

    def counters(self) -> list[DomainCounters]:
        try:
            wires = self._call("counters")
        except BadRequest:  # a xend-simhv from before the call: no device counters
            return [DomainCounters(domain) for domain in self.list_domains()]
        return [protocol.counters_from_wire(wire) for wire in wires]

    def has_domain_named(self, name: str) -> bool:
        try:
            return bool(self._call("named", name=name))
        except BadRequest:  # a xend-simhv from before the call, still running its domains
            return any(domain.name == name for domain in self.list_domains())

    def create(self, name: str, memory_mb: int, *, vcpus: int = 1, cpu: int = -1,
               domid: int | None = None, image: LinuxImage | None = None) -> int:
        # xend-simhv loads an image at once: nothing to start before ``build``.
        return self._call("create", name=name, memory_mb=memory_mb, vcpus=vcpus, cpu=cpu,
                          domid=domid)

    def build(self, domid: int, image: LinuxImage) -> None:
        self._call("build", domid=domid, kernel=image.kernel, ramdisk=image.ramdisk,
                   cmdline=image.cmdline)

    def ready(self, domid: int) -> None:
        """Nothing to wait for: xend-simhv builds a domain whole."""

    def pause(self, domid: int) -> None:
        self._call("pause", domid=domid)

    def unpause(self, domid: int) -> None:
        self._call("unpause", domid=domid)

    def destroying(self, domid: int) -> None:
        """Nothing to do: the simulated backends let go of a domain's devices at once."""

    def destroy(self, domid: int) -> None:
        self._call("destroy", domid=domid)

    def shutdown(self, domid: int, reason: ShutdownReason, key: str = "") -> None:
        """Send the guest a CMSG_SHUTDOWN request; it acts on it a moment later."""
        try:
            code = reason.code
        except KeyError:
            raise BadRequest(f"cannot ask domain {domid} to shut down for {reason.value}: "
                             "that is not a shutdown request") from None
        sysrq = reason is ShutdownReason.SYSRQ
        self.send_control(domid, Shutdown(ShutdownSubtype(code),
                                          key=(key or None) if sysrq else None))

    def save_state(self, domid: int) -> bytes:
        """The state of suspended domain ``domid``, for a save image."""
        return base64.b64decode(self._call("save_state", domid=domid))

    def restore_state(self, name: str, memory_mb: int, state: bytes) -> int:
        """A new paused domain built from ``state`` (from ``save_state``); its id."""
        return self._call("restore_state", name=name, memory_mb=memory_mb,
                          state=base64.b64encode(state).decode())

    def resume(self, domid: int) -> None:
        """Undo the suspend of domain ``domid``: it runs on."""
        self._call("resume", domid=domid)

    def memory_pages(self, domid: int) -> int:
        """How many pages of memory domain ``domid`` has."""
        return int(self._call("memory_map", domid=domid)["pages"])

    def dirty_pages(self, domid: int) -> list[int]:
        """The pages domain ``domid`` wrote since the last call; the log starts afresh."""
        return [int(page) for page in self._call("dirty_pages", domid=domid)]

    def read_pages(self, domid: int, first: int, count: int) -> bytes:
        """Pages ``first`` .. ``first + count - 1`` of domain ``domid``, back to back.

        The sim's memory is a pattern (``sim/memory.py``): it is made here from the
        guest's seed and page versions rather than sent over simhv's line protocol.
        """
        wire = self._call("memory_map", domid=domid)
        if first < 0 or count < 0 or first + count > int(wire["pages"]):
            raise BadRequest(f"domain {domid} has no pages {first}..{first + count - 1}")
        versions = {int(page): int(version) for page, version in wire["versions"].items()}
        return memory.read_pages(int(wire["seed"]), versions, first, count)

    def set_maxmem(self, domid: int, memory_mb: int) -> None:
        self._call("set_maxmem", domid=domid, memory_mb=memory_mb)

    def set_memory_target(self, domid: int, memory_mb: int) -> None:
        self._call("set_memory_target", domid=domid, memory_mb=memory_mb)

    def pincpu(self, domid: int, cpu: int) -> None:
        self._call("pincpu", domid=domid, cpu=cpu)

    def set_sched(self, domid: int, params: SchedParams) -> None:
        self._call("set_sched", domid=domid, params=protocol.sched_to_wire(params))

    def sched(self, domid: int) -> list[SchedParams]:
        return [protocol.sched_from_wire(Args("sched", wire))
                for wire in self._call("sched", domid=domid)]

    def set_bvt_ctx_allow(self, ctx_allow: int) -> None:
        self._call("set_bvt_ctx_allow", ctx_allow=ctx_allow)

    def set_rrobin_slice(self, slice_ns: int) -> None:
        self._call("set_rrobin_slice", slice_ns=slice_ns)

    def dmesg(self, clear: bool = False) -> str:
        return self._call("dmesg", clear=clear)

    def watch(self, notify: Callable[[Notification], None]) -> None:
        """Call ``notify`` from a thread of this driver whenever a domain changes."""
        stream = self._open_stream("watch")
        self._start(lambda: self._read_events(stream, notify), "simhv-watch")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = [self._sock, *self._streams]
        self._calls.lose()
        for sock in sockets:
            _shut(sock)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.timeout)

    # --- beyond base.Driver ------------------------------------------------------------

    def send_control(self, domid: int, message: Message) -> Message:
        """Send a control message to domain ``domid``; returns the response.

        Backend requests (CMSG_BLKIF_BE, ...) go to the backend domain, 0, and name the
        frontend domain inside. A backend's non-OK status comes back in the response,
        not as an error: ``device.messages.check`` turns it into one.
        """
        msg_id = self._msg_ids.next()
        wire = self._call("control", domid=domid, **protocol.control_to_wire(message, msg_id))
        answer_id, answer = protocol.control_from_wire(Args("control", wire))
        if answer_id != msg_id or answer.type != message.type:
            raise HypervisorError(f"xend-simhv answered control message {msg_id} "
                                  f"({type(message).__name__}) with {answer_id} "
                                  f"({type(answer).__name__})")
        return answer

    def attach_backing(self, path: str, readonly: bool = False, shared: bool = False) -> int:
        """Attach a host file or device as a sim block device; its number for extents
        (the sim locks no image: ``shared`` changes nothing)."""
        return self._call("attach_backing", path=path, readonly=readonly)

    def detach_backing(self, device: int) -> None:
        self._call("detach_backing", device=device)

    def backings(self) -> list[tuple[int, str, bool]]:
        """The attached backings: (device, path, readonly)."""
        return [(b["device"], b["path"], b["readonly"]) for b in self._call("backings")]

    def open_console(self, domid: int) -> socket.socket:
        """The raw console byte stream of domain ``domid``, both ways; the caller owns it.

        Opening it closes the stream of any earlier client of this console; it ends
        when the domain is destroyed.
        """
        return self._open_stream("console", domid=domid, keep=False)

    def ping(self) -> str:
        return self._call("ping")

    # --- the shared connection ------------------------------------------------------------

    def _call(self, call: str, **args: Wire) -> Wire:
        with self._write_lock:
            sock, calls = self._sock, self._calls
        pending = calls.start(call)
        try:
            with self._write_lock:
                sock.sendall(protocol.request(pending.id, call, args))
        except OSError:
            calls.lose()
        return calls.wait(pending, self.timeout)

    def _read_replies(self, sock: socket.socket, calls: Calls[Wire]) -> None:
        try:
            with sock.makefile("rb") as lines:
                for line in lines:
                    reply = protocol.parse_reply(line)
                    pending = calls.take(reply.id)
                    if pending is None:
                        continue  # it was late: its caller has given up
                    if reply.error is None:
                        pending.future.set_result(reply.result)
                    else:
                        pending.future.set_exception(reply.error)
        except (OSError, ValueError) as e:
            if not self._closed:
                log.error("Reading from xend-simhv at %s failed: %s", self.socket_path, e)
        finally:
            calls.lose()
            sock.close()

    def _late(self, call: str, seconds: float) -> str:
        return f"xend-simhv at {self.socket_path} did not answer {call} within {seconds:g} s"

    def _lost_error(self) -> XendError:
        if self._closed:
            return HypervisorError(f"the driver for xend-simhv at {self.socket_path} is closed")
        return HypervisorError(f"lost the connection to xend-simhv at {self.socket_path}")

    # --- streams -------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as e:
            sock.close()
            raise HypervisorError(f"cannot connect to xend-simhv at {self.socket_path}: "
                                  f"{e.strerror or e}") from None
        sock.settimeout(None)
        return sock

    def _open_stream(self, call: str, *, keep: bool = True, **args: Wire) -> socket.socket:
        """A new connection whose ``call`` was answered ok: from here on it is a stream."""
        with self._lock:
            if self._closed:
                raise self._lost_error()
        sock = self._connect()
        with closed_on_error(
                sock, late=lambda: Timeout(self._late(call, self.timeout)),
                broken=lambda _error: HypervisorError(
                    f"lost the connection to xend-simhv at {self.socket_path} while opening "
                    f"{call}")):
            sock.settimeout(self.timeout)
            ask(sock, call, args)
            sock.settimeout(None)
        if keep:
            with self._lock:
                self._streams.append(sock)
        return sock

    def _read_events(self, sock: socket.socket,
                     notify: Callable[[Notification], None]) -> None:
        try:
            with sock.makefile("rb") as lines:
                for line in lines:
                    notification = protocol.parse_event(line)
                    try:
                        notify(notification)
                    except Exception:
                        log.exception("A watcher of xend-simhv failed on %s", notification)
        except (OSError, ValueError, XendError) as e:
            if not self._closed:
                log.error("Watching xend-simhv at %s failed: %s", self.socket_path, e)
        finally:
            if not self._closed:
                log.error("Lost the watch connection to xend-simhv at %s", self.socket_path)
            sock.close()

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()


def ask(sock: socket.socket, call: str, args: Mapping[str, Wire]) -> Wire:
    """Send one request on ``sock`` and read its reply; its result, or the XendError it
    carries. What follows the reply stays in the socket (a stream, after ``watch`` or
    ``console``)."""
    sock.sendall(protocol.request(0, call, args))
    reply = protocol.parse_reply(_read_line(sock))
    if reply.error is not None:
        raise reply.error
    return reply.result


def _read_line(sock: socket.socket) -> bytes:
    """One reply line, read a byte at a time so the stream behind it stays in the socket."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte or len(line) > protocol.MAX_LINE:
            raise ConnectionResetError("xend-simhv closed the connection")
        line += byte
    return bytes(line)


def _shut(sock: socket.socket) -> None:
    """Close ``sock`` so that a thread blocked reading it wakes up."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
