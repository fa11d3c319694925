"""The host as the qemu driver reports it: physinfo and Domain-0, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path

from xend_actors.hypervisor.base import DomainState, HvDomain

DOM0_NAME = "Domain-0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    return values


def cpu_mhz() -> int:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                return round(float(value))
    except (OSError, ValueError):
        pass
    return 0


def hyperthreads_per_core() -> int:
    """Threads per core: ``siblings`` / ``cpu cores`` of the first cpu in /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        return max(1, int(fields["siblings"]) // int(fields["cpu cores"]))
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return 1


def host_cpu_seconds() -> float:
    """The cpu time the host has spent busy (not idle or waiting), all cpus together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def dom0() -> HvDomain:
    """Domain 0: the host itself, with what it uses now and all it has."""
    memory = meminfo()
    total = memory.get("MemTotal", 0)
    used = total - memory.get("MemAvailable", memory.get("MemFree", 0))
    return HvDomain(domid=0, name=DOM0_NAME, state=DomainState.RUNNING,
                    shutdown_reason=None, memory_kb=used, maxmem_kb=total,
                    vcpus=os.cpu_count() or 1, cpu=0, cpu_time=host_cpu_seconds())
