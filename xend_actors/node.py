"""What the node is: the host's identity and size, as ``GET /xend/node/`` reports it.

The uname fields come from the host; cores, clock and memory are the hypervisor's
physinfo (facts §4.4), which its driver reports. ``events_unwritten`` (ours) counts the
events the event log could not write to disk (a full or read-only disk): they are
kept in memory and written once the disk takes them again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from xend_actors import sxp


@dataclass(frozen=True)
class PhysInfo:
    """The hypervisor's view of the machine: what domains can be given."""

    cores: int
    hyperthreads_per_core: int
    cpu_mhz: int
    memory_mb: int
    free_memory_mb: int
    hypervisor: str = ""  # what runs the domains, when the driver says (qemu: the accelerator)


@dataclass(frozen=True)
class NodeInfo:
    """The node reply: uname fields plus the hypervisor's physinfo."""

    system: str
    host: str
    release: str
    version: str
    machine: str
    phys: PhysInfo
    events_unwritten: int = 0  # events kept in memory only: the disk refused them

    def sxpr(self) -> sxp.Value:
        hypervisor = [["hypervisor", self.phys.hypervisor]] if self.phys.hypervisor else []
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
            *hypervisor,
            ["events_unwritten", str(self.events_unwritten)],
        ]


def node_info(phys: PhysInfo, events_unwritten: int = 0) -> NodeInfo:
    uname = os.uname()
    return NodeInfo(uname.sysname, uname.nodename, uname.release, uname.version,
                    uname.machine, phys, events_unwritten)
