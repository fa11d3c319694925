"""What the qemu driver keeps of a domain in the run dir, so a new xend can adopt it.

One JSON file per domain, ``<run-dir>/qemu/<domid>/state.json``, written atomically
whenever it changes: what the domain was created with, which qemu process runs it,
how it ended (once qemu said so) and the scheduling xend gave it. The host's boot id is
in it too: a state from an earlier boot names processes that are long gone. So it need
only outlive a xend process, never a host crash: it is not fsynced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from xend_actors.hypervisor.base import (
    AtroposParams,
    BvtParams,
    FbvtParams,
    LinuxImage,
    SchedParams,
    ShutdownReason,
)
from xend_actors.store import atomic_write

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_SCHED_KINDS: dict[str, type] = {"bvt": BvtParams, "fbvt": FbvtParams, "atropos": AtroposParams}


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class DomainState:
    domid: int
    name: str
    memory_mb: int  # the RAM qemu is launched with: the most the balloon can give back
    maxmem_mb: int
    vcpus: int
    cpu: int  # -1: any
    boot: str
    accel: str = ""
    pid: int = 0  # 0 until built
    started: int = 0  # the process's start time, clock ticks after boot
    image: LinuxImage | None = None
    exit: ShutdownReason | None = None  # how the guest ended (CRASH too), once known
    sched: tuple[SchedParams, ...] = field(default_factory=tuple)
    cgroup: str = ""

    @property
    def built(self) -> bool:
        return self.pid != 0


def save(path: Path, state: DomainState) -> None:
    atomic_write(path, json.dumps(_to_json(state), indent=1).encode() + b"\n", sync=False)


def load(path: Path) -> DomainState:
    """The state in ``path``; ValueError if it is not one."""
    try:
        data = json.loads(path.read_text())
        return _from_json(data)
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a domain state ({error})") from None


def _to_json(state: DomainState) -> dict[str, Any]:
    data = {f.name: getattr(state, f.name) for f in fields(state)}
    data["image"] = asdict(state.image) if state.image is not None else None
    data["exit"] = state.exit.value if state.exit is not None else None
    data["sched"] = [{"kind": _kind(params), **asdict(params)} for params in state.sched]
    return data


def _from_json(data: dict[str, Any]) -> DomainState:
    image = data.get("image")
    sched = []
    for entry in data.get("sched") or []:
        entry = dict(entry)
        sched.append(_SCHED_KINDS[entry.pop("kind")](**entry))
    return DomainState(
        domid=int(data["domid"]), name=str(data["name"]), memory_mb=int(data["memory_mb"]),
        maxmem_mb=int(data["maxmem_mb"]), vcpus=int(data["vcpus"]), cpu=int(data["cpu"]),
        boot=str(data["boot"]), accel=str(data.get("accel") or ""),
        pid=int(data.get("pid") or 0), started=int(data.get("started") or 0),
        image=LinuxImage(**image) if image else None,
        exit=ShutdownReason(data["exit"]) if data.get("exit") else None,
        sched=tuple(sched), cgroup=str(data.get("cgroup") or ""),
    )


def _kind(params: SchedParams) -> str:
    for kind, cls in _SCHED_KINDS.items():
        if isinstance(params, cls):
            return kind
    raise TypeError(f"unknown scheduler parameters {params!r}")
