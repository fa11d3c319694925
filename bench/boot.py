"""Booting and pausing a real guest through xend, beside the same guest under bare qemu.

One xend runs the qemu driver; the test guest comes from ``tests/guest/build``. In each
round, both ways alternating which goes first:

* boot: ``xm create -F FILE`` (the command line tool, as a user runs it), then xend's
  console port until the guest's shell prompt; beside it, the same kernel and initramfs
  with the same devices started by one bare ``qemu-system-x86_64`` command line, its
  serial console on stdout, until the same prompt;
* pause/unpause: a ``pause`` and an ``unpause`` request to xend's HTTP interface (over
  its Unix socket, with ``XendClient``), beside a raw QMP ``stop`` and ``cont`` on the
  bare qemu's monitor socket.

The ratios are medians of the paired rounds' ratios, since the host's other load slows
both sides of a round alike. Both use the accelerator xend chose (``xm info``).

    python bench/boot.py            # 5 boots each way, 200 pause/unpause pairs
    python bench/boot.py --quick    # 2 boots, 50 pairs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import XendClient, percentile, print_table, sxp

from tests.e2e.qemu import Guest, build_guest
from tests.support.home import XendHome, new_home
from xend_actors.hypervisor.qemu.process import DomainPaths, LaunchSpec, qemu_argv

PROMPT = b"]# "
BOOT_TIMEOUT = 120.0
MEMORY_MB = 128
XM = shutil.which("xm", path=os.path.dirname(sys.executable))


@dataclass(frozen=True)
class Settings:
    boots: int
    pauses: int


FULL = Settings(boots=5, pauses=200)
QUICK = Settings(boots=2, pauses=50)


# --- through xend ---------------------------------------------------------------------------


@contextlib.contextmanager
def qemu_xend(extra: str = "") -> Iterator[XendHome]:
    """A started xend with the qemu driver, with config lines ``extra`` first; stopped,
    its guests killed, at exit."""
    home = new_home(extra + "(hypervisor qemu)\n")
    try:
        started = home.xend("start")
        if started.returncode != 0:
            raise RuntimeError(f"xend did not start: {started.stderr.strip()}")
        yield home
    finally:
        home.xend("stop")
        home.kill_fence()  # a pool member's watchdog outlives xend
        for state in (home.run_dir / "qemu").glob("*/state.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.kill(int(json.loads(state.read_text())["pid"]), 9)
        shutil.rmtree(home.root, ignore_errors=True)


def vm_file(folder: Path, guest: Guest, name: str) -> Path:
    config = ["vm", ["name", name], ["memory", str(MEMORY_MB)],
              ["image", ["linux", ["kernel", guest.kernel], ["ramdisk", guest.ramdisk],
                         ["args", "quiet loglevel=3"]]]]
    path = folder / f"{name}.sxp"
    path.write_text(sxp.show(config) + "\n")
    return path


def read_until(sock: socket.socket, marker: bytes, timeout: float = BOOT_TIMEOUT) -> None:
    deadline, seen = time.monotonic() + timeout, b""
    while marker not in seen:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"the console closed before {marker!r}: {seen[-300:]!r}")
        seen += data


def boot_through_xend(home: XendHome, xend: XendClient, config: Path, name: str, *,
                      keep: bool = False) -> float:
    """Seconds from ``xm create`` to the prompt on xend's console port; then the domain
    is destroyed unless ``keep``."""
    env = {**os.environ, "XEND_UNIX_PATH": str(home.unix_path)}
    began = time.perf_counter()
    subprocess.run([XM, "create", "-F", str(config)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    port = int(sxp.child_value(sxp.child(xend.xend_domain(name), "console"), "console_port"))
    with socket.create_connection(("127.0.0.1", port)) as con:
        read_until(con, PROMPT)
    took = time.perf_counter() - began
    if not keep:
        xend.xend_domain_destroy(name, "halt")
    return took


def pause_through_xend(xend: XendClient, name: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        xend.xend_domain_pause(name)
        xend.xend_domain_unpause(name)
        times.append(time.perf_counter() - began)
    return times


# --- bare qemu --------------------------------------------------------------------------------


class RawQmp:
    """QMP with nothing in between: one JSON line out, lines in until the reply."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.lines = self.sock.makefile("rb")
        self.lines.readline()
        self.call("qmp_capabilities")

    def call(self, command: str) -> None:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while b'"return"' not in (line := self.lines.readline()):
            if not line or b'"error"' in line:
                raise RuntimeError(f"qemu: {line!r}")

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def bare_argv(folder: Path, guest: Guest, accel: str) -> list[str]:
    """xend's own command line for the guest, minus -S, with the console on stdout."""
    paths = DomainPaths(folder)
    spec = LaunchSpec("bare", MEMORY_MB, 1, accel, guest.kernel, guest.ramdisk,
                      "console=ttyS0 quiet loglevel=3")
    argv = [arg for arg in qemu_argv(shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
                                      spec, paths) if arg != "-S"]
    at = argv.index("chardev:ser0")
    argv[at] = "stdio"
    del argv[at - 3:at - 1]  # the serial's socket chardev
    return argv


@contextlib.contextmanager
def bare_qemu(guest: Guest, accel: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    folder = Path(tempfile.mkdtemp(prefix="bench-qemu-"))
    process = subprocess.Popen(bare_argv(folder, guest, accel), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield process, folder / "qmp.sock"
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def bare_prompt(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    seen = b""
    while PROMPT not in seen:
        data = os.read(process.stdout.fileno(), 65536)
        if not data:
            raise RuntimeError(f"bare qemu ended before the prompt: {seen[-300:]!r}")
        seen += data


def boot_bare(guest: Guest, accel: str) -> float:
    began = time.perf_counter()
    with bare_qemu(guest, accel) as (process, _):
        bare_prompt(process)
        return time.perf_counter() - began


def pause_bare(qmp: RawQmp, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        qmp.call("stop")
        qmp.call("cont")
        times.append(time.perf_counter() - began)
    return times


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    settings = QUICK if parser.parse_args().quick else FULL
    guest = build_guest()
    xend_boots: list[float] = []
    bare_boots: list[float] = []
    with qemu_xend() as home, XendClient(unix_path=home.unix_path) as xend:
        configs = Path(tempfile.mkdtemp(prefix="bench-boot-", dir=home.root))
        print("a first boot through xend (it picks the accelerator) ...", flush=True)
        boot_through_xend(home, xend, vm_file(configs, guest, "warm-up"), "warm-up")
        hypervisor = sxp.child_value(xend.xend_node(), "hypervisor")
        accel = "kvm" if ", kvm (" in hypervisor else "tcg"
        print(f"{settings.boots} boots each way, {accel} ...", flush=True)
        for round_ in range(settings.boots):
            config = vm_file(configs, guest, f"boot-{round_}")
            if round_ % 2:
                bare_boots.append(boot_bare(guest, accel))
                xend_boots.append(boot_through_xend(home, xend, config, f"boot-{round_}"))
            else:
                xend_boots.append(boot_through_xend(home, xend, config, f"boot-{round_}"))
                bare_boots.append(boot_bare(guest, accel))

        print(f"{settings.pauses} pause/unpause pairs each way ...", flush=True)
        # Both guests idle at their prompt, so neither side pays for the other's boot.
        pauser = vm_file(configs, guest, "pauser")
        boot_through_xend(home, xend, pauser, "pauser", keep=True)
        xend_pauses: list[float] = []
        bare_pauses: list[float] = []
        with bare_qemu(guest, accel) as (process, qmp_path):
            bare_prompt(process)
            qmp = RawQmp(qmp_path)
            for _ in range(10):  # alternate in runs of a tenth
                xend_pauses += pause_through_xend(xend, "pauser", settings.pauses // 10)
                bare_pauses += pause_bare(qmp, settings.pauses // 10)
            qmp.close()

    boot_ratio = statistics.median(x / b for x, b in zip(xend_boots, bare_boots, strict=True))
    pause_ratio = percentile(xend_pauses, 0.5) / percentile(bare_pauses, 0.5)

    def s(times: list[float]) -> str:
        return f"{statistics.median(times):.2f}"

    def ms(times: list[float], fraction: float) -> str:
        return f"{1000 * percentile(times, fraction):.2f}"

    print()
    print(f"A {MEMORY_MB} MiB test guest under {accel}, through xend and under bare qemu "
          f"({settings.boots} paired boots; {settings.pauses} pause/unpause pairs each; "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}).")
    print()
    print_table(["path", "boot to prompt s (median)", "pause+unpause ms p50", "p99"], [
        ["bare qemu, raw QMP stop/cont (baseline)", s(bare_boots), ms(bare_pauses, 0.5),
         ms(bare_pauses, 0.99)],
        ["xm create / xend HTTP pause+unpause", s(xend_boots), ms(xend_pauses, 0.5),
         ms(xend_pauses, 0.99)],
        ["xend / bare", f"{boot_ratio:.2f}x", f"{pause_ratio:.1f}x",
         f"{percentile(xend_pauses, 0.99) / percentile(bare_pauses, 0.99):.1f}x"],
    ])


if __name__ == "__main__":
    main()
