"""A domain's cpu weight and cap, as cgroups give them to its qemu process.

Xen's schedulers become the host's: a weight (bvt, fbvt) and a cap (atropos). Each
qemu whose scheduling xend sets gets its own group, ``xend-qemu/qemu-<pid>``, in the
hierarchy that has the cpu controller: cgroup v2 (``cpu.weight``, ``cpu.max``) when
the cpu controller is enabled there, else cgroup v1 (``cpu.shares``,
``cpu.cfs_period_us``, ``cpu.cfs_quota_us``), as on hybrid hosts whose v2 mount has
no cpu controller. Where neither can be written, the call fails with a sentence that
says so. A group is removed once its qemu has exited.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from xend_actors.errors import HypervisorError

MOUNTS = Path("/proc/self/mounts")
BASE = "xend-qemu"
DEFAULT_WEIGHT = 100  # cgroup v2's default; v1's cpu.shares default 1024 is the same share
V1_SHARES_PER_WEIGHT = 1024 / DEFAULT_WEIGHT


class Version(Enum):
    V1 = 1
    V2 = 2


@dataclass(frozen=True)
class CpuHierarchy:
    """Where the cpu controller is mounted, and which cgroup version it speaks."""

    version: Version
    mount: Path

    def group(self, pid: int) -> Path:
        return self.mount / BASE / f"qemu-{pid}"


@dataclass(frozen=True)
class CpuCap:
    """At most ``quota_us`` of cpu time every ``period_us`` (one cpu's worth = period)."""

    quota_us: int
    period_us: int


def find_hierarchy(mounts: Path = MOUNTS) -> CpuHierarchy | None:
    """The cgroup hierarchy with the cpu controller: v2 if it has it, else v1, else None."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    v1 = None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        mount = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup2":
            try:
                controllers = (mount / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "cpu" in controllers:
                return CpuHierarchy(Version.V2, mount)
        elif fields[2] == "cgroup" and "cpu" in fields[3].split(",") and v1 is None:
            v1 = CpuHierarchy(Version.V1, mount)
    return v1


def apply(hierarchy: CpuHierarchy | None, pid: int, *, weight: int | None = None,
          cap: CpuCap | None = None, uncapped: bool = False, what: str = "") -> Path:
    """Put process ``pid`` in its own group and set its weight and cap (``uncapped``
    lifts a cap); returns the group's folder."""
    if hierarchy is None:
        raise HypervisorError(f"cannot set {what or 'cpu scheduling'}: this host has no "
                              "cgroup cpu controller (neither cgroup v2 with cpu in "
                              "cgroup.controllers nor a cgroup v1 cpu hierarchy is mounted)")
    group = hierarchy.group(pid)
    try:
        _make_group(hierarchy, group)
        if hierarchy.version is Version.V2:
            if weight is not None:
                _write(group / "cpu.weight", str(weight))
            if cap is not None:
                _write(group / "cpu.max", f"{cap.quota_us} {cap.period_us}")
            elif uncapped:
                _write(group / "cpu.max", "max")
        else:
            if weight is not None:
                shares = max(2, min(262144, round(weight * V1_SHARES_PER_WEIGHT)))
                _write(group / "cpu.shares", str(shares))
            if cap is not None:
                _write(group / "cpu.cfs_quota_us", "-1")  # a new period must fit the old quota
                _write(group / "cpu.cfs_period_us", str(cap.period_us))
                _write(group / "cpu.cfs_quota_us", str(cap.quota_us))
            elif uncapped:
                _write(group / "cpu.cfs_quota_us", "-1")
        _write(group / "cgroup.procs", str(pid))
    except OSError as error:
        raise HypervisorError(f"cannot set {what or 'cpu scheduling'} in cgroup "
                              f"v{hierarchy.version.value} at {group}: "
                              f"{error.strerror or error}") from None
    return group


def remove(group: Path, timeout: float = 2.0) -> None:
    """Remove a group whose process has exited (an exiting process may linger a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                return
        time.sleep(0.05)


def _make_group(hierarchy: CpuHierarchy, group: Path) -> None:
    base = group.parent
    if hierarchy.version is Version.V2:
        # v2 hands a controller down one level at a time.
        _enable_cpu(hierarchy.mount)
        base.mkdir(exist_ok=True)
        _enable_cpu(base)
    else:
        base.mkdir(exist_ok=True)
    group.mkdir(exist_ok=True)


def _enable_cpu(folder: Path) -> None:
    control = folder / "cgroup.subtree_control"
    with contextlib.suppress(OSError):
        if "cpu" in control.read_text().split():
            return
    _write(control, "+cpu")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as out:
        out.write(value)
