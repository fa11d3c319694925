"""Save, restore, destroy and live migration of a real guest through xend, beside the
same operations done with bare QMP on a bare qemu, in one sitting.

Two xends run the qemu driver, each a relocation server on 127.0.0.1, so a guest can go
back and forth between them; the test guest comes from ``tests/guest/build``. Beside
them bare qemus run the same guest with xend's own command line (``process.py``). Each
round does every operation both ways, the order of the two sides rotating from round
to round, so the host's other load falls on both alike:

* save: ``op=save`` to xend (its image has the header, info and CRC-32, is fsynced,
  and the domain is destroyed), beside bare QMP ``stop``, ``migrate fd:`` into a file
  (``getfd``), an fsync of the file and ``quit``;
* restore: ``op=restore`` until xend answers (the guest runs with its devices and
  console), beside launching qemu with ``-incoming defer``, ``migrate-incoming fd:`` from
  the file and ``cont``;
* destroy: ``op=destroy`` of a running domain until xend answers, beside QMP ``quit``
  until the bare qemu has exited;
* live migration: ``op=migrate live=1`` from one xend to the other (the destination
  launches its qemu, the stream passes both xends), beside launching a destination qemu
  and ``migrate tcp:`` between the two qemus on loopback (under xend's own downtime
  limit, ``transfer.DOWNTIME_LIMIT_MS``), then ``cont`` and ``quit``.
  Downtime: xend reports it in its ``xend.domain.migrate ... ok`` event (from the
  source's stop until the destination said it runs the guest); bare, qemu's own
  ``downtime`` plus the time from ``completed`` to the destination's ``cont``.

Ratios (and differences) are medians of the paired rounds' ratios (and differences).

    python bench/transfers.py            # 4 rounds (~3 minutes)
    python bench/transfers.py --rounds 8
    python bench/transfers.py --save-only --rounds 12   # save and restore alone (~1 minute)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boot import MEMORY_MB, PROMPT, Guest, build_guest, read_until, vm_file
from common import XendClient, print_table, sxp

from tests.support.home import XendHome, new_home
from tests.support.ports import free_port
from xend_actors.hypervisor.qemu.process import DomainPaths, LaunchSpec, qemu_argv
from xend_actors.hypervisor.qemu.transfer import DOWNTIME_LIMIT_MS

QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
TIMEOUT = 120.0


# --- two xends ------------------------------------------------------------------------------


@contextlib.contextmanager
def qemu_xends() -> Iterator[list[XendHome]]:
    homes: list[XendHome] = []
    try:
        for _ in range(2):
            port = free_port()
            home = new_home("(hypervisor qemu)\n(qemu-accel tcg)\n(xend-relocation-server yes)\n"
                            f"(xend-relocation-port {port})\n"
                            "(xend-relocation-address 127.0.0.1)\n"
                            "(xend-relocation-tls no)\n")  # relocation_tls.py measures TLS
            homes.append(home)
            started = home.xend("start")
            if started.returncode != 0:
                raise RuntimeError(f"xend did not start: {started.stderr.strip()}")
        yield homes
    finally:
        for home in homes:
            home.xend("stop")
            for state in (home.run_dir / "qemu").glob("*/state.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    os.kill(int(json.loads(state.read_text())["pid"]), 9)
            shutil.rmtree(home.root, ignore_errors=True)


def relocation_port(home: XendHome) -> int:
    return int(re.search(r"\(xend-relocation-port (\d+)\)", home.config_file.read_text())
               .group(1))  # type: ignore[union-attr]


def console_prompt(xend: XendClient, name: str) -> None:
    port = int(sxp.child_value(sxp.child(xend.xend_domain(name), "console"), "console_port"))
    with socket.create_connection(("127.0.0.1", port)) as con:
        con.sendall(b"\n")
        read_until(con, PROMPT)


def migrate_downtimes(home: XendHome, name: str) -> list[float]:
    """The downtimes of the migrations of ``name`` out of ``home``'s xend so far."""
    return [float(d) for d in re.findall(
        rf"EVENT> xend\.domain\.migrate \({name} \d+ ok .*\(downtime ([0-9.]+)\)",
        home.logfile.read_text())]


def migrate_downtime(home: XendHome, name: str, before: int) -> float:
    """The downtime of the migration of ``name`` out of ``home``'s xend after the
    ``before`` earlier ones (its event is logged just after the reply)."""
    deadline = time.monotonic() + 10
    while len(downtimes := migrate_downtimes(home, name)) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("xend logged no xend.domain.migrate ok event")
        time.sleep(0.01)
    return downtimes[before]


# --- bare qemu --------------------------------------------------------------------------------


class Qmp:
    """QMP with nothing in between, events on: one JSON line out, lines in."""

    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.lines = self.sock.makefile("rb")
        self.lines.readline()
        self.events: list[dict[str, Any]] = []
        self.call("qmp_capabilities")
        self.call("migrate-set-capabilities",
                  capabilities=[{"capability": "events", "state": True}])

    def call(self, command: str, fd: int | None = None, **arguments: Any) -> Any:
        data = json.dumps({"execute": command, **({"arguments": arguments} if arguments
                                                  else {})}).encode() + b"\n"
        if fd is None:
            self.sock.sendall(data)
        else:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        fd.to_bytes(4, "little"))])
        while True:
            message = json.loads(self.lines.readline() or b"null")
            if message is None:
                raise RuntimeError(f"qemu closed its monitor on {command}")
            if "event" in message:
                self.events.append(message)
            elif "error" in message:
                raise RuntimeError(f"qemu refused {command}: {message['error']}")
            else:
                return message["return"]

    def wait_migration(self, status: str = "completed") -> None:
        while not any(e["event"] == "MIGRATION" and e["data"]["status"] == status
                      for e in self.events):
            message = json.loads(self.lines.readline() or b"null")
            if message is None:
                raise RuntimeError("qemu closed its monitor mid-migration")
            if "event" in message:
                if message.get("data", {}).get("status") == "failed":
                    raise RuntimeError("the migration failed")
                self.events.append(message)
        self.events.clear()

    def quit(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.call("quit")
        process.wait(timeout=TIMEOUT)
        self.lines.close()
        self.sock.close()


def launch_bare(folder: Path, guest: Guest, incoming: bool) -> tuple[subprocess.Popen[bytes],
                                                                       Qmp]:
    """xend's own command line for the guest, in ``folder``, started (``-S``: paused)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = LaunchSpec("bare", MEMORY_MB, 1, "tcg", guest.kernel, guest.ramdisk,
                      "console=ttyS0 quiet loglevel=3", incoming)
    process = subprocess.Popen(qemu_argv(QEMU, spec, DomainPaths(folder)),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    LAUNCHED.append(process)
    return process, Qmp(folder / "qmp.sock")


LAUNCHED: list[subprocess.Popen[bytes]] = []  # every bare qemu, killed however the run ends


def kill_bare() -> None:
    for process in LAUNCHED:
        if process.poll() is None:
            process.kill()
            process.wait()


def bare_save(qmp: Qmp, process: subprocess.Popen[bytes], file: Path) -> float:
    began = time.perf_counter()
    qmp.call("migrate-set-parameters", **{"max-bandwidth": 10 << 30})
    qmp.call("stop")
    with open(file, "wb") as out:
        qmp.call("getfd", fd=out.fileno(), fdname="save")
        qmp.call("migrate", uri="fd:save")
        qmp.wait_migration()
        os.fsync(out.fileno())
    qmp.quit(process)
    return time.perf_counter() - began


def bare_restore(folder: Path, guest: Guest, file: Path) -> tuple[float, subprocess.Popen[bytes],
                                                                   Qmp]:
    began = time.perf_counter()
    process, qmp = launch_bare(folder, guest, incoming=True)
    with open(file, "rb") as data:
        qmp.call("getfd", fd=data.fileno(), fdname="restore")
        qmp.call("migrate-incoming", uri="fd:restore")
        qmp.wait_migration()
    qmp.call("cont")
    return time.perf_counter() - began, process, qmp


def bare_migrate(qmp: Qmp, process: subprocess.Popen[bytes], folder: Path,
                 guest: Guest) -> tuple[float, float, subprocess.Popen[bytes], Qmp]:
    """Seconds, downtime; the destination's process and monitor."""
    began = time.perf_counter()
    new_process, new = launch_bare(folder, guest, incoming=True)
    port = free_port()
    new.call("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    qmp.call("migrate-set-parameters", **{"max-bandwidth": 10 << 30,
                                               "downtime-limit": DOWNTIME_LIMIT_MS})
    qmp.call("migrate", uri=f"tcp:127.0.0.1:{port}")
    qmp.wait_migration()
    completed = time.perf_counter()
    downtime_ms = qmp.call("query-migrate")["downtime"]
    new.wait_migration()
    new.call("cont")
    downtime = downtime_ms / 1000 + time.perf_counter() - completed
    qmp.quit(process)
    return time.perf_counter() - began, downtime, new_process, new


def bare_prompt_on(folder: Path) -> None:
    with socket.socket(socket.AF_UNIX) as con:
        con.connect(str(folder / "console.sock"))
        con.sendall(b"\n")
        read_until(con, PROMPT)


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    try:
        run()
    finally:
        kill_bare()


def bare_destroy(folder: Path, guest: Guest) -> float:
    """Seconds from QMP ``quit`` until a running bare qemu has exited."""
    process, qmp = launch_bare(folder, guest, incoming=False)
    qmp.call("cont")
    began = time.perf_counter()
    qmp.quit(process)
    return time.perf_counter() - began


def xend_destroy(xend: XendClient, work: Path, guest: Guest) -> float:
    """Seconds of ``op=destroy`` of a running domain, until xend answers."""
    xend.xend_domain_create(sxp.parse(vm_file(work, guest, "doomed").read_text()))
    xend.xend_domain_unpause("doomed")
    began = time.perf_counter()
    xend.xend_domain_destroy("doomed", "halt")
    return time.perf_counter() - began


KEYS = ("save", "restore", "destroy", "migrate", "downtime")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="paired rounds (default 4)")
    parser.add_argument("--save-only", action="store_true",
                        help="only save and restore, for more rounds in less time")
    arguments = parser.parse_args()
    rounds = arguments.rounds
    keys = KEYS[:2] if arguments.save_only else KEYS
    guest = build_guest()
    figures: dict[str, list[float]] = {f"{side} {k}": [] for k in KEYS
                                       for side in ("xend", "bare")}
    work = Path(tempfile.mkdtemp(prefix="bench-transfers-"))
    with qemu_xends() as homes, XendClient(unix_path=homes[0].unix_path) as first, \
            XendClient(unix_path=homes[1].unix_path) as second:
        xends = [first, second]
        name = "mover"
        first.xend_domain_create(sxp.parse(vm_file(work, guest, name).read_text()))
        first.xend_domain_unpause(name)
        console_prompt(first, name)
        bare_dirs = [work / "bare-a", work / "bare-b"]
        process, qmp = launch_bare(bare_dirs[0], guest, incoming=False)
        qmp.call("cont")
        bare_prompt_on(bare_dirs[0])
        print(f"{rounds} rounds of " + ("save and restore" if arguments.save_only else
                                        "save, restore, destroy and live migration each way")
              + " ...", flush=True)
        here, bare_here = 0, 0
        for round_ in range(rounds):
            order = ("xend", "bare") if round_ % 2 == 0 else ("bare", "xend")
            image, bare_image = work / "xend.save", work / "bare.save"
            for side in order:
                if side == "xend":
                    began = time.perf_counter()
                    xends[here].xend_domain_save(name, str(image))
                    figures["xend save"].append(time.perf_counter() - began)
                else:
                    figures["bare save"].append(bare_save(qmp, process, bare_image))
            for side in order:
                if side == "xend":
                    began = time.perf_counter()
                    xends[here].xend_domain_restore(str(image))
                    figures["xend restore"].append(time.perf_counter() - began)
                else:
                    took, process, qmp = bare_restore(bare_dirs[bare_here], guest, bare_image)
                    figures["bare restore"].append(took)
            console_prompt(xends[here], name)
            bare_prompt_on(bare_dirs[bare_here])
            if arguments.save_only:
                print(f"  round {round_ + 1}: " + ", ".join(
                    f"{k} {1000 * figures[f'xend {k}'][-1]:.0f}/"
                    f"{1000 * figures[f'bare {k}'][-1]:.0f}" for k in keys) + " ms (xend/bare)",
                    flush=True)
                continue

            for side in order:
                if side == "xend":
                    figures["xend destroy"].append(xend_destroy(xends[here], work, guest))
                else:
                    figures["bare destroy"].append(bare_destroy(work / "bare-doomed", guest))

            there = 1 - here
            for side in order:
                if side == "xend":
                    before = len(migrate_downtimes(homes[here], name))
                    began = time.perf_counter()
                    xends[here].xend_domain_migrate(
                        name, f"127.0.0.1:{relocation_port(homes[there])}", live=1)
                    figures["xend migrate"].append(time.perf_counter() - began)
                    figures["xend downtime"].append(migrate_downtime(homes[here], name,
                                                                     before))
                else:
                    took, downtime, process, qmp = bare_migrate(
                        qmp, process, bare_dirs[1 - bare_here], guest)
                    figures["bare migrate"].append(took)
                    figures["bare downtime"].append(downtime)
            here, bare_here = there, 1 - bare_here
            console_prompt(xends[here], name)
            bare_prompt_on(bare_dirs[bare_here])
            print(f"  round {round_ + 1}: " + ", ".join(
                f"{k} {1000 * figures[f'xend {k}'][-1]:.0f}/{1000 * figures[f'bare {k}'][-1]:.0f}"
                for k in KEYS) + " ms (xend/bare)", flush=True)
        qmp.quit(process)
    shutil.rmtree(work, ignore_errors=True)

    def ratio(what: str) -> str:
        pairs = zip(figures[f"xend {what}"], figures[f"bare {what}"], strict=True)
        return f"{statistics.median(x / b for x, b in pairs):.2f}x"

    def extra(what: str) -> str:
        pairs = zip(figures[f"xend {what}"], figures[f"bare {what}"], strict=True)
        return f"{1000 * statistics.median(x - b for x, b in pairs):+.0f}"

    def s(key: str) -> str:
        return f"{1000 * statistics.median(figures[key]):.0f}"

    print()
    print(f"A {MEMORY_MB} MiB test guest under tcg, {rounds} paired rounds, medians in ms "
          f"({os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}).")
    print()
    print_table(["path", *keys], [
        ["bare qemu, raw QMP (baseline)", *(s(f"bare {k}") for k in keys)],
        ["through xend", *(s(f"xend {k}") for k in keys)],
        ["xend / bare", *(ratio(k) for k in keys)],
        ["xend - bare, ms", *(extra(k) for k in keys)],
    ])


if __name__ == "__main__":
    main()
