"""The calls xend-simhv answers: a request's args in, the model's answer out, on the wire.

Each entry reads its args with the types they must have, calls the model and turns
the result into JSON values (protocol.py documents the calls). The two stream
calls, ``watch`` and ``console``, change the connection and live in server.py.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping

from xend_actors.errors import BadRequest
from xend_actors.hypervisor.base import LinuxImage
from xend_actors.hypervisor.sim import protocol
from xend_actors.hypervisor.sim.model import SimHypervisor
from xend_actors.hypervisor.sim.protocol import Args, Wire

Call = Callable[[SimHypervisor, Args], Wire]


def _create(hv: SimHypervisor, args: Args) -> Wire:
    return hv.create(args.text("name"), args.integer("memory_mb"),
                     vcpus=args.integer("vcpus", 1), cpu=args.integer("cpu", -1),
                     domid=args.optional_integer("domid"))


def _build(hv: SimHypervisor, args: Args) -> Wire:
    image = LinuxImage(args.text("kernel"), args.text("ramdisk", ""), args.text("cmdline", ""))
    hv.build(args.integer("domid"), image)


def _restore_state(hv: SimHypervisor, args: Args) -> Wire:
    try:
        state = base64.b64decode(args.text("state"), validate=True)
    except binascii.Error:
        raise BadRequest("restore_state: state must be base64") from None
    return hv.restore_state(args.text("name"), args.integer("memory_mb"), state)


def _memory_map(hv: SimHypervisor, args: Args) -> Wire:
    seed, pages, versions = hv.memory_map(args.integer("domid"))
    # The seed is 64 bits: as text, since JSON numbers need not hold it exactly.
    return {"seed": str(seed), "pages": pages,
            "versions": {str(page): version for page, version in versions.items()}}


def _control(hv: SimHypervisor, args: Args) -> Wire:
    msg_id, message = protocol.control_from_wire(args)
    return protocol.control_to_wire(hv.send_control(args.integer("domid"), message), msg_id)


CALLS: Mapping[str, Call] = {
    "ping": lambda hv, args: "xend-simhv",
    "physinfo": lambda hv, args: protocol.physinfo_to_wire(hv.physinfo()),
    "list": lambda hv, args: [protocol.domain_to_wire(d) for d in hv.list_domains()],
    "domain": lambda hv, args: protocol.domain_to_wire(hv.domain(args.integer("domid"))),
    "counters": lambda hv, args: [protocol.counters_to_wire(c) for c in hv.counters()],
    "named": lambda hv, args: hv.has_domain_named(args.text("name")),
    "create": _create,
    "build": _build,
    "pause": lambda hv, args: hv.pause(args.integer("domid")),
    "unpause": lambda hv, args: hv.unpause(args.integer("domid")),
    "destroy": lambda hv, args: hv.destroy(args.integer("domid")),
    "control": _control,
    "save_state": lambda hv, args: base64.b64encode(
        hv.save_state(args.integer("domid"))).decode(),
    "restore_state": _restore_state,
    "resume": lambda hv, args: hv.resume(args.integer("domid")),
    "memory_map": _memory_map,
    "dirty_pages": lambda hv, args: hv.dirty_pages(args.integer("domid")),
    "attach_backing": lambda hv, args: hv.attach_backing(args.text("path"),
                                                         args.flag("readonly")),
    "detach_backing": lambda hv, args: hv.detach_backing(args.integer("device")),
    "backings": lambda hv, args: [{"device": b.device, "path": b.path, "readonly": b.readonly}
                                  for b in hv.backings()],
    "set_maxmem": lambda hv, args: hv.set_maxmem(args.integer("domid"),
                                                 args.integer("memory_mb")),
    "set_memory_target": lambda hv, args: hv.set_memory_target(args.integer("domid"),
                                                               args.integer("memory_mb")),
    "pincpu": lambda hv, args: hv.pincpu(args.integer("domid"), args.integer("cpu")),
    "set_sched": lambda hv, args: hv.set_sched(
        args.integer("domid"), protocol.sched_from_wire(args.object("params"))),
    "sched": lambda hv, args: [protocol.sched_to_wire(p) for p in hv.sched(args.integer("domid"))],
    "set_bvt_ctx_allow": lambda hv, args: hv.set_bvt_ctx_allow(args.integer("ctx_allow")),
    "set_rrobin_slice": lambda hv, args: hv.set_rrobin_slice(args.integer("slice_ns")),
    "dmesg": lambda hv, args: hv.dmesg(args.flag("clear")),
}


def answer(hv: SimHypervisor, call: str, args: Args) -> Wire:
    """The result of ``call``; raises the XendError the call ends in."""
    handler = CALLS.get(call)
    if handler is None:
        raise BadRequest(f"xend-simhv knows no call {call!r}")
    return handler(hv, args)
