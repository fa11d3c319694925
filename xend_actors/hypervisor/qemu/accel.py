"""Which accelerator qemu uses: KVM when a guest really runs under it, TCG otherwise.

``/dev/kvm`` opening is not enough: on some hosts (nested, firecracker) it opens, the
firmware even runs, and the guest kernel then hangs forever. So the probe boots a real
kernel (the first domain's) under KVM with early printk on a serial file, and takes KVM
only if the kernel says ``Linux version`` before the deadline; the probe process is
killed either way. The choice is kept in the run dir (``qemu/accel.json``), which is
dropped when the host reboots, so it is made once per boot, not once per domain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from xend_actors.hypervisor import detached
from xend_actors.hypervisor.qemu.process import escape
from xend_actors.store import atomic_write

log = logging.getLogger(__name__)

PROBE_DEADLINE = 3.0  # a kernel under working KVM prints its banner well within 1 s
PROBE_MARKER = b"Linux version"
KVM_DEVICE = Path("/dev/kvm")
POLL = 0.05


class Accel(Enum):
    KVM = "kvm"
    TCG = "tcg"


class AccelMode(Enum):
    """What the configuration asks for: probe, or one accelerator without probing."""

    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str

    def describe(self) -> str:
        return f"{self.accel.value} ({self.reason})"


def forced(mode: AccelMode) -> AccelChoice | None:
    """The choice a configuration makes by itself, or None when it asks for a probe."""
    if mode is AccelMode.KVM:
        return AccelChoice(Accel.KVM, "set by qemu-accel in the configuration")
    if mode is AccelMode.TCG:
        return AccelChoice(Accel.TCG, "set by qemu-accel in the configuration")
    return None


def load_choice(path: Path) -> AccelChoice | None:
    """The choice made earlier in this boot, if any."""
    try:
        data = json.loads(path.read_text())
        return AccelChoice(Accel(data["accel"]), str(data["reason"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_choice(path: Path, choice: AccelChoice) -> None:
    atomic_write(path, json.dumps({"accel": choice.accel.value,
                                   "reason": choice.reason}).encode() + b"\n")


def probe(qemu: str, kernel: Path, deadline: float = PROBE_DEADLINE) -> AccelChoice:
    """KVM if ``kernel`` starts under it within ``deadline`` seconds, else TCG and why."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return AccelChoice(Accel.TCG, f"{KVM_DEVICE}: {error.strerror}")
    os.close(fd)
    with tempfile.TemporaryDirectory(prefix="xend-kvm-probe-") as tmp:
        serial = Path(tmp) / "serial"
        argv = [qemu, "-accel", "kvm", "-machine", "pc", "-m", "128", "-nodefaults",
                "-no-user-config", "-display", "none", "-no-reboot",
                "-kernel", str(kernel),
                "-append", "console=ttyS0 earlyprintk=ttyS0 loglevel=8 panic=-1",
                "-chardev", f"file,id=probe,path={escape(str(serial))}",
                "-serial", "chardev:probe"]
        output = Path(tmp) / "output"
        began = time.monotonic()
        process = detached.start(argv, output)
        try:
            outcome = detached.wait_until(process, lambda: PROBE_MARKER in _read(serial),
                                          timeout=deadline, poll=POLL)
            if outcome is detached.Outcome.READY:
                took = time.monotonic() - began
                return AccelChoice(Accel.KVM, f"a kernel started under KVM in {took:.2f} s")
            if outcome is detached.Outcome.EXITED:
                said = _read(output).decode(errors="replace").strip()
                return AccelChoice(Accel.TCG, f"qemu -accel kvm exited with status "
                                              f"{process.returncode}: {said[-300:]}")
            return AccelChoice(Accel.TCG, f"{KVM_DEVICE} opens, but a kernel under KVM "
                                          f"printed nothing within {deadline:g} s")
        finally:
            _kill(process)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        # A vcpu stuck inside KVM can take a while to die; it is reaped when it does.
        log.warning("The KVM probe (pid %d) has not exited yet after SIGKILL", process.pid)
