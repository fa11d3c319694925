"""The qemu driver and the host: the KVM probe in ``xm info``, vcpu pinning, scheduler
parameters as cgroup cpu weight and cap, balloon and maximum memory; and the cgroup code
on made-up v1 and v2 trees, so the version this host lacks is covered too.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.qemu import QEMU, QemuXend, booted, console
from tests.support.processes import wait_for
from tests.support.xend import XM
from xend_actors import sxp
from xend_actors.errors import HypervisorError
from xend_actors.hypervisor.qemu import cgroup

needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed "
                                "(apt-get install qemu-system-x86)")
pytestmark = pytest.mark.e2e


def vcpu_threads(pid: int) -> list[int]:
    """The vcpu threads of a qemu (TCG names them ``CPU 0/TCG``, KVM ``CPU 0/KVM``)."""
    return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()
            if (task / "comm").read_text().startswith("CPU ")]


def allowed_cpus(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError(f"no Cpus_allowed_list for thread {tid}")


def cpu_group(pid: int) -> Path | None:
    """The cgroup v1 cpu group of ``pid``, as a folder, if it is not the root."""
    hierarchy = cgroup.find_hierarchy()
    assert hierarchy is not None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        wanted = "cpu" in controllers.split(",") if hierarchy.version is cgroup.Version.V1 \
            else controllers == ""
        if wanted and path != "/":
            return hierarchy.mount / path.lstrip("/")
    return None


def xm_list_cpu(xend: QemuXend, name: str) -> int:
    """The CPU column of ``xm list``'s row for ``name``."""
    shown = subprocess.run([XM, "list", name], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "XEND_UNIX_PATH": str(xend.home.unix_path)})
    assert shown.returncode == 0, shown.stderr
    return int(shown.stdout.splitlines()[1][16:].split()[2])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@needs_qemu
def test_the_accelerator_is_probed_once_and_shown_by_xm_info(
    qemu_xend: Callable[..., QemuXend],
) -> None:
    xend = qemu_xend("")  # qemu-accel auto: KVM only if a kernel really boots under it
    node = sxp.child_value(sxp.parse(xend.http.get("/xend/node/").text), "hypervisor")
    assert node.startswith("qemu ") and "when the first domain is built" in node
    xend.create_vm("probe")
    with console(xend.console_port("probe")) as con:
        booted(con)
    shown = subprocess.run([XM, "info"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "XEND_UNIX_PATH": str(xend.home.unix_path)})
    assert shown.returncode == 0, shown.stderr
    line = next(row for row in shown.stdout.splitlines() if row.startswith("hypervisor"))
    print(line)
    assert "kvm (a kernel started under KVM" in line or "tcg (" in line
    accel = "kvm" if "kvm (" in line else "tcg"
    assert f"-accel {accel}" in xend.home.logfile.read_text()
    assert (xend.home.run_dir / "qemu" / "accel.json").exists()


@needs_qemu
def test_pin_weight_cap_and_balloon(qemu: QemuXend) -> None:
    xend = qemu
    domid = sxp.child_value(xend.create_vm("tuned", ["vcpus", "1"]), "id")
    pid = xend.qemu_pid(domid)
    with console(xend.console_port("tuned")) as con:
        booted(con)
        threads = vcpu_threads(pid)
        assert threads
        last = (os.cpu_count() or 1) - 1
        # Unpinned, xm list's CPU is the one its vcpu last ran on (Xen's), never -1.
        assert 0 <= xm_list_cpu(xend, "tuned") <= last
        xend.do("tuned", "pincpu", cpu=str(last))
        assert all(allowed_cpus(pid, tid) == str(last) for tid in threads)
        assert sxp.child_value(xend.info("tuned"), "cpu") == str(last)
        xend.do("tuned", "pincpu", cpu="-1")
        assert all(allowed_cpus(pid, tid) == f"0-{last}" for tid in threads) or last == 0
        assert 0 <= xm_list_cpu(xend, "tuned") <= last

        xend.do("tuned", "cpu_bvt_set", mcuadv="20", warpback="0", warpvalue="0", warpl="0",
                warpu="0")
        group = cpu_group(pid)
        assert group is not None and group.name == f"qemu-{pid}"
        if (group / "cpu.shares").exists():
            assert (group / "cpu.shares").read_text().strip() == "512"
        else:
            assert (group / "cpu.weight").read_text().strip() == "50"

        # 20 ms every 100 ms: a guest spinning its vcpu gets a fifth of a cpu at most.
        xend.do("tuned", "cpu_atropos_set", period="100000000", slice="20000000",
                latency="0", xtratime="0")
        con.run("(while :; do :; done) & echo SPIN-$((1+1))", rb"SPIN-2")
        began, used = time.monotonic(), cpu_seconds(pid)
        wait_for(lambda: time.monotonic() - began > 3, 5, "a 3 s window")
        share = (cpu_seconds(pid) - used) / (time.monotonic() - began)
        print(f"capped at 20 %: qemu used {share:.0%} of a cpu")
        assert share < 0.35
        con.run("kill %1; echo CALM-$((2+2))", rb"CALM-4")

        assert xend.op("tuned", "maxmem_set", memory="256").status_code == 500
        xend.do("tuned", "maxmem_set", memory="120")
        assert xend.op("tuned", "mem_target_set", target="125").status_code == 409
        xend.do("tuned", "mem_target_set", target="100")
        wait_for(lambda: sxp.child_value(xend.info("tuned"), "memory") == "100", 30,
                 "the balloon at 100 MiB")
        assert sxp.child_value(xend.info("tuned"), "maxmem") == "120"

        assert xend.op("tuned", "shutdown", reason="sysrq", key="").status_code == 400
        xend.do("tuned", "destroy", reason="halt")
    wait_for(lambda: not group.exists(), 10, "the cgroup removed")


# --- the cgroup code on made-up trees --------------------------------------------------------


def fake_mount(tmp_path: Path, kind: str, options: str, controllers: str = "") -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    if controllers:
        (root / "cgroup.controllers").write_text(controllers + "\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"{kind} {root} {kind} {options} 0 0\n")
    return mounts


def test_cgroup_v2_weight_and_cap(tmp_path: Path) -> None:
    mounts = fake_mount(tmp_path, "cgroup2", "rw,relatime", "cpuset cpu io memory")
    hierarchy = cgroup.find_hierarchy(mounts)
    assert hierarchy == cgroup.CpuHierarchy(cgroup.Version.V2, tmp_path / "cgroup")
    group = cgroup.apply(hierarchy, 4242, weight=50, cap=cgroup.CpuCap(20000, 100000))
    assert group == tmp_path / "cgroup" / "xend-qemu" / "qemu-4242"
    assert (tmp_path / "cgroup" / "cgroup.subtree_control").read_text() == "+cpu"
    assert (group.parent / "cgroup.subtree_control").read_text() == "+cpu"
    assert (group / "cpu.weight").read_text() == "50"
    assert (group / "cpu.max").read_text() == "20000 100000"
    assert (group / "cgroup.procs").read_text() == "4242"
    cgroup.apply(hierarchy, 4242, uncapped=True)
    assert (group / "cpu.max").read_text() == "max"


def test_cgroup_v1_when_v2_has_no_cpu_controller(tmp_path: Path) -> None:
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("hugetlb\n")
    v1 = tmp_path / "cpu"
    v1.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {v2} cgroup2 rw 0 0\ncgroup {v1} cgroup rw,relatime,cpu 0 0\n")
    hierarchy = cgroup.find_hierarchy(mounts)
    assert hierarchy == cgroup.CpuHierarchy(cgroup.Version.V1, v1)
    group = cgroup.apply(hierarchy, 7, weight=200, cap=cgroup.CpuCap(30000, 50000))
    assert (group / "cpu.shares").read_text() == "2048"
    assert (group / "cpu.cfs_period_us").read_text() == "50000"
    assert (group / "cpu.cfs_quota_us").read_text() == "30000"


def test_no_cpu_controller_is_a_clear_error(tmp_path: Path) -> None:
    mounts = fake_mount(tmp_path, "cgroup2", "rw", "memory pids")
    assert cgroup.find_hierarchy(mounts) is None
    with pytest.raises(HypervisorError, match="no cgroup cpu controller"):
        cgroup.apply(None, 1, weight=100, what="the cpu weight of domain 3")
