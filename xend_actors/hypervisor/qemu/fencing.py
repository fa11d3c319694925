"""Destroying qemu domains by name without a driver: for a pool member's fencing
watchdog (pool/watchdog.py), which acts when xend cannot.

A QemuDriver would adopt every guest (opening monitors that a xend still alive holds)
and tidy up the run dir as a xend starting does; this reads each domain's state file
and kills its qemu (the process that started at the recorded time, never a pid reused
since), then removes its cgroup and folder, as ``QemuGuest.destroy`` does: a xend
starting later finds the domain gone. A domain created but not yet recorded as built
may have a qemu launched already: it is found by its command line.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from pathlib import Path

from xend_actors.hypervisor.qemu import cgroup, process
from xend_actors.hypervisor.qemu import state as runtime
from xend_actors.hypervisor.qemu.process import DomainPaths

log = logging.getLogger(__name__)


def destroy_named(run_dir: Path, names: Collection[str]) -> list[tuple[str, int]]:
    """Destroy every domain of this host's qemu driver in ``run_dir`` whose name is in
    ``names``, Domain-0 aside; the (name, domid) of those that ran."""
    root = run_dir / "qemu"
    try:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                         key=lambda p: int(p.name))
    except FileNotFoundError:
        return []
    boot = runtime.boot_id()
    destroyed = []
    for folder in folders:
        paths = DomainPaths(folder)
        try:
            st = runtime.load(paths.state)
        except (OSError, ValueError):
            continue  # a create cut off before its state: no name to go by
        if st.name not in names or st.boot != boot:
            continue
        if st.built:
            ran = process.alive(st.pid, st.started)
            process.kill(st.pid, st.started, None)
        else:
            ran = bool(process.kill_unrecorded(paths))
        if st.cgroup:
            cgroup.remove(Path(st.cgroup))
        shutil.rmtree(folder, ignore_errors=True)
        if ran:
            destroyed.append((st.name, st.domid))
    return destroyed
