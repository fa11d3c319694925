"""The wire between xend-simhv and its driver: newline-delimited JSON over a Unix socket.

This module is the wire without the socket, bytes to values and back: ``Lines`` frames
what comes in, the rest makes and reads the lines. ``server.py`` and ``driver.py`` hold
the sockets.

Calls. One connection carries any number of requests; each is answered by a reply
with the request's id (in order, but the driver matches ids and does not rely on it)::

    → {"id": 7, "call": "create", "args": {"name": "web", "memory_mb": 256}}
    ← {"id": 7, "ok": 3}
    ← {"id": 7, "error": {"kind": "conflict", "message": "cannot create ..."}}

The error kinds are ``bad_request``, ``not_found``, ``conflict``, ``hypervisor`` and
``timeout``, one per XendError subclass. A request line longer than ``MAX_LINE`` or
that is not such an object is answered with a ``bad_request`` error (id null when
it has none); the connection stays usable.

The calls and their args (results are ``null`` unless given)::

    ping                                   → "xend-simhv"
    physinfo                               → {cores, hyperthreads_per_core, cpu_mhz,
                                              memory_mb, free_memory_mb}
    list                                   → [domain, ...] in domid order
    domain {domid}                         → domain
    counters                               → [[domain, vbds, vifs], ...] in domid order,
                                              a vbd [vdev, read_bytes, write_bytes,
                                              read_ops, write_ops], a vif [handle,
                                              rx_bytes, tx_bytes, rx_packets, tx_packets]
    named {name}                           → whether a domain is called name
    create {name, memory_mb, vcpus, cpu, domid|null} → domid
    build {domid, kernel, ramdisk, cmdline}
    pause / unpause / destroy {domid}
    control {domid, frame}                 → {frame}  (a 64-byte control frame in hex,
                                              device.messages; the answer echoes its id)
    save_state {domid}                     → state in base64 (the domain must be suspended:
                                              shut down for suspend and not destroyed)
    restore_state {name, memory_mb, state} → domid of a new paused domain built from the
                                              base64 state instead of a kernel image
    resume {domid}                         (undo a suspend: the guest runs on)
    attach_backing {path, readonly}        → device number (for vbd extents)
    detach_backing {device}
    backings                               → [{device, path, readonly}, ...]
    set_maxmem / set_memory_target {domid, memory_mb}
    pincpu {domid, cpu}
    set_sched {domid, params: {kind: bvt|fbvt|atropos, <fields>}}
    sched {domid}                          → [params, ...]
    set_bvt_ctx_allow {ctx_allow} · set_rrobin_slice {slice_ns}
    dmesg {clear}                          → text

where a domain is the list of HvDomain's fields in order (a list, not an object,
so that a thousand domains make a short line)::

    [domid, name, state, shutdown_reason, memory_kb, maxmem_kb, vcpus, cpu, cpu_time]

with state the letters ``rbpscd`` (running, blocked, paused, shutdown, crashed,
dying), ``-`` for a clear flag, and shutdown_reason a ShutdownReason value or null.

Streams. Two calls turn their connection into a stream after an ``ok`` reply:
``watch`` sends ``{"event": "changed", "domid": N}`` lines whenever a domain's flags
change or it goes away, and ``{"event": "control", "domid": N, "frame": HEX}`` lines
for each control message a guest sends xend (a frontend's request); ``console
{domid}`` carries that domain's raw console bytes both ways (one client per domain: a
new one closes the old) and closes when the domain is destroyed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any, TypeGuard

from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound, Timeout, XendError
from xend_actors.hypervisor.base import (
    AtroposParams,
    BvtParams,
    DomainChanged,
    DomainCounters,
    DomainState,
    FbvtParams,
    GuestMessage,
    HvDomain,
    SchedParams,
    ShutdownReason,
    VbdCounters,
    VifCounters,
)
from xend_actors.hypervisor.ring import messages
from xend_actors.hypervisor.ring.messages import Message
from xend_actors.node import PhysInfo

MAX_LINE = 1 << 20
STATE_LETTERS = "rbpscd"  # facts §6's letters, and d for dying
SCHED_KINDS: Mapping[str, type] = {"bvt": BvtParams, "fbvt": FbvtParams,
                                   "atropos": AtroposParams}
ERROR_KINDS: Mapping[str, type[XendError]] = {
    "bad_request": BadRequest,
    "not_found": NotFound,
    "conflict": Conflict,
    "hypervisor": HypervisorError,
    "timeout": Timeout,
}

Wire = Any  # a JSON value


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _loads(line: bytes) -> Wire:
    """The JSON value of a line; ValueError if it is none (nested too deep included)."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("a line nested too deep") from None


# --- framing -------------------------------------------------------------------------


class LineTooLong(BadRequest):
    def __init__(self) -> None:
        super().__init__(f"a request line must be shorter than {MAX_LINE} bytes")


class Lines:
    """Bytes as they come in, out as whole lines of at most ``MAX_LINE`` bytes (the
    newline dropped). A longer line is refused once, as soon as it is too long, and the
    rest of it, up to its newline, is skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False  # the rest of a line already refused

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> bytes | None:
        """The next whole line, None until one has come; LineTooLong for a long one."""
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._skipping:
                self._skipping = False
            elif len(line) > MAX_LINE:
                raise LineTooLong()
            else:
                return line
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
            if not self._skipping:
                self._skipping = True
                raise LineTooLong()
        return None

    def rest(self) -> bytes:
        """What came after the last line, no longer buffered (a stream's first bytes)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest


# --- messages ------------------------------------------------------------------------

def encode(message: Mapping[str, Wire]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(request_id: int, call: str, args: Mapping[str, Wire]) -> bytes:
    return encode({"id": request_id, "call": call, "args": args})


def ok_reply(request_id: int | None, result: Wire) -> bytes:
    return encode({"id": request_id, "ok": result})


def error_reply(request_id: int | None, error: XendError) -> bytes:
    kind = next((kind for kind, cls in ERROR_KINDS.items() if isinstance(error, cls)),
                "hypervisor")
    return encode({"id": request_id, "error": {"kind": kind, "message": error.message}})


def event(domid: int) -> bytes:
    return encode({"event": "changed", "domid": domid})


def guest_event(domid: int, message: Message) -> bytes:
    return encode({"event": "control", "domid": domid, **control_to_wire(message, 0)})


def parse_event(line: bytes) -> DomainChanged | GuestMessage:
    """What a watch event line says: a domain changed, or a guest sent a message;
    ValueError if it is no such line, BadRequest if its control frame is not one."""
    event = _loads(line)
    kind = event.get("event") if isinstance(event, dict) else None
    domid = event.get("domid") if isinstance(event, dict) else None
    if kind == "changed" and _is_integer(domid):
        return DomainChanged(domid)
    if kind == "control" and _is_integer(domid):
        _, message = control_from_wire(Args("event", event))
        return GuestMessage(domid, message)
    raise ValueError(f"not a watch event: {line!r}")


def parse_request(line: bytes) -> tuple[int, str, Args]:
    """A request line's id, call and args; BadRequest (with ``request_id``) if malformed."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise MalformedRequest(None, f"a request must be a JSON object on one line: {e}") from None
    if not isinstance(message, dict):
        raise MalformedRequest(None, "a request must be a JSON object")
    request_id = message.get("id")
    if not _is_integer(request_id):
        raise MalformedRequest(None, "a request needs an integer id")
    call = message.get("call")
    if not isinstance(call, str):
        raise MalformedRequest(request_id, "a request needs a call name")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise MalformedRequest(request_id, f"the args of {call} must be an object")
    return request_id, call, Args(call, args)


@dataclasses.dataclass(frozen=True)
class Reply:
    """A reply line: the id of the request it answers, and its result or its error."""

    id: int | None
    result: Wire = None
    error: XendError | None = None


def parse_reply(line: bytes) -> Reply:
    """What a reply line says; ValueError if it is no reply."""
    message = _loads(line)
    if not isinstance(message, dict) or "id" not in message:
        raise ValueError(f"not a reply: {line[:200]!r}")
    request_id = message["id"] if _is_integer(message["id"]) else None
    error = message.get("error")
    if error is None:
        return Reply(request_id, message.get("ok"))
    if not isinstance(error, dict):
        raise ValueError(f"not an error: {error!r}")
    kind = error.get("kind")
    cls = ERROR_KINDS.get(kind, HypervisorError) if isinstance(kind, str) else HypervisorError
    return Reply(request_id, error=cls(str(error.get("message", ""))))


class MalformedRequest(BadRequest):
    def __init__(self, request_id: int | None, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class Args:
    """A request's arguments, read with the type each must have."""

    def __init__(self, call: str, values: Wire) -> None:
        if not isinstance(values, dict):
            raise BadRequest(f"the args of {call} must be an object, got {values!r}")
        self._call = call
        self._values = values

    def integer(self, name: str, default: int | None = None) -> int:
        value = self._values.get(name, default)
        if not _is_integer(value):
            raise self._bad(name, "an integer")
        return value

    def optional_integer(self, name: str) -> int | None:
        return None if self._values.get(name) is None else self.integer(name)

    def text(self, name: str, default: str | None = None) -> str:
        value = self._values.get(name, default)
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._values.get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def object(self, name: str) -> Args:
        return Args(f"{self._call} {name}", self._values.get(name))

    def _bad(self, name: str, expected: str) -> BadRequest:
        return BadRequest(f"{self._call}: argument {name} must be {expected}, "
                          f"got {self._values.get(name)!r}")


# --- values ----------------------------------------------------------------------------

def domain_to_wire(domain: HvDomain) -> Wire:
    reason = domain.shutdown_reason
    return [domain.domid, domain.name, state_to_wire(domain.state),
            None if reason is None else reason.value, domain.memory_kb, domain.maxmem_kb,
            domain.vcpus, domain.cpu, domain.cpu_time]


def domain_from_wire(wire: Wire) -> HvDomain:
    domid, name, flags, reason, memory_kb, maxmem_kb, vcpus, cpu, cpu_time = wire
    return HvDomain(domid, name, state_from_wire(flags),
                    None if reason is None else ShutdownReason(reason), memory_kb, maxmem_kb,
                    vcpus, cpu, cpu_time)


def counters_to_wire(counters: DomainCounters) -> Wire:
    return [domain_to_wire(counters.domain),
            [[v.vdev, v.read_bytes, v.write_bytes, v.read_ops, v.write_ops]
             for v in counters.vbds],
            [[v.handle, v.rx_bytes, v.tx_bytes, v.rx_packets, v.tx_packets]
             for v in counters.vifs]]


def counters_from_wire(wire: Wire) -> DomainCounters:
    domain, vbds, vifs = wire
    return DomainCounters(domain_from_wire(domain), tuple(VbdCounters(*v) for v in vbds),
                          tuple(VifCounters(*v) for v in vifs))


# There are few states and many domains: each is made once.
@functools.cache
def state_to_wire(state: DomainState) -> str:
    return "".join(letter if flag in state else "-"
                   for letter, flag in zip(STATE_LETTERS, DomainState, strict=True))


@functools.cache
def state_from_wire(letters: str) -> DomainState:
    if len(letters) != len(STATE_LETTERS):
        raise ValueError(f"a domain state has {len(STATE_LETTERS)} letters, got {letters!r}")
    state = DomainState(0)
    for letter, flag in zip(letters, DomainState, strict=True):
        if letter != "-":
            state |= flag
    return state


def physinfo_to_wire(info: PhysInfo) -> Wire:
    return dataclasses.asdict(info)


def physinfo_from_wire(wire: Wire) -> PhysInfo:
    return PhysInfo(**wire)


def sched_to_wire(params: SchedParams) -> Wire:
    kind = next(kind for kind, cls in SCHED_KINDS.items() if isinstance(params, cls))
    return {"kind": kind, **dataclasses.asdict(params)}


def sched_from_wire(args: Args) -> SchedParams:
    kind = args.text("kind")
    cls = SCHED_KINDS.get(kind)
    if cls is None:
        raise BadRequest(f"unknown scheduler {kind!r}: expected one of {', '.join(SCHED_KINDS)}")
    return cls(**{f.name: args.integer(f.name) for f in dataclasses.fields(cls)})


def control_to_wire(message: Message, msg_id: int) -> Wire:
    return {"frame": messages.pack(message, msg_id).hex()}


def control_from_wire(args: Args) -> tuple[int, Message]:
    """The id and message of a control frame; BadRequest if it is not a known, whole one."""
    try:
        frame = bytes.fromhex(args.text("frame"))
    except ValueError:
        raise BadRequest("a control frame must be hex digits") from None
    return messages.unpack(frame)
