"""What the node is: the host's identity and size, as ``GET /xend/node/`` reports it.

The uname fields come from the host; cores, clock and memory are the hypervisor's
physinfo (facts §4.4). Until a hypervisor driver reports its own, the host's
figures from /proc stand in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from xend_actors import sxp


@dataclass(frozen=True)
class PhysInfo:
    """The hypervisor's view of the machine: what domains can be given."""

    cores: int
    hyperthreads_per_core: int
    cpu_mhz: int
    memory_mb: int
    free_memory_mb: int


@dataclass(frozen=True)
class NodeInfo:
    """The node reply: uname fields plus the hypervisor's physinfo."""

    system: str
    host: str
    release: str
    version: str
    machine: str
    phys: PhysInfo

    def sxpr(self) -> sxp.Value:
        return [
            "node",
            ["system", self.system],
            ["host", self.host],
            ["release", self.release],
            ["version", self.version],
            ["machine", self.machine],
            ["cores", str(self.phys.cores)],
            ["hyperthreads_per_core", str(self.phys.hyperthreads_per_core)],
            ["cpu_mhz", str(self.phys.cpu_mhz)],
            ["memory", str(self.phys.memory_mb)],
            ["free_memory", str(self.phys.free_memory_mb)],
        ]


def node_info(phys: PhysInfo) -> NodeInfo:
    uname = os.uname()
    return NodeInfo(uname.sysname, uname.nodename, uname.release, uname.version,
                    uname.machine, phys)


def host_physinfo(proc: Path = Path("/proc")) -> PhysInfo:
    """The host's own figures, read from /proc."""
    meminfo = _meminfo_kib(proc / "meminfo")
    return PhysInfo(
        cores=os.cpu_count() or 1,
        hyperthreads_per_core=1,
        cpu_mhz=_cpu_mhz(proc / "cpuinfo"),
        memory_mb=meminfo.get("MemTotal", 0) // 1024,
        free_memory_mb=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)) // 1024,
    )


def _meminfo_kib(path: Path) -> dict[str, int]:
    fields = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        number = rest.split()[0] if rest.split() else ""
        if number.isdigit():
            fields[key] = int(number)
    return fields


def _cpu_mhz(path: Path) -> int:
    try:
        match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", path.read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(float(match.group(1))) if match else 0
