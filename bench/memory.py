"""xend's memory: idle, per sim domain and across save/restore cycles, beside a baseline.

Two trees are measured in the same run, one after the other, each with its own venv and
byte-compiled first: this one and a baseline (``--base``, by default /work/base, the tree
before the import diet). Each xend is started as the tests start one (its own folder, the
sim driver, the Unix socket) and measured from ``/proc/<pid>/status``:

* idle: its RSS and threads once started and asked for the domain list, when two reads
  half a second apart agree; beside it the modules that ``import xend_actors.cli,
  xend_actors.daemon`` loads in that tree's Python (for this tree also the modules the
  started xend holds, read through the debug port's ``(sys.modules)``);
* save/restore: one running sim domain saved to a file and restored ``--cycles`` times;
  RSS after the first cycle and after the last (growth is the difference);
* per domain: ``--domains`` sim domains created; RSS and threads before and after, the
  difference divided by the count.

    python bench/memory.py                 # 1000 domains, 20 cycles
    python bench/memory.py --quick         # 200 domains, 10 cycles
    python bench/memory.py --base /path    # another baseline tree (with its .venv)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, XendClient, bench_config, create_guest, print_table, proc_status, sxp

from tests.support.home import XendHome, new_home

SETTLE_SECONDS = 10.0  # at most, for the RSS to stop moving
SETTLE_STEP_KIB = 64


@dataclass(frozen=True)
class Tree:
    name: str
    root: Path

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")

    @property
    def xend(self) -> str:
        return str(self.root / ".venv" / "bin" / "xend")


@dataclass
class Figures:
    idle_kib: int = 0
    idle_threads: int = 0
    import_modules: int = 0
    started_modules: int | None = None
    cycle_first_kib: int = 0
    cycle_last_kib: int = 0
    domains_before_kib: int = 0
    domains_after_kib: int = 0
    threads_before: int = 0
    threads_after: int = 0


def compile_tree(tree: Tree) -> None:
    """Byte-compile the tree's package, as setup-venv does (measure with .pyc present)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([tree.python, "-m", "compileall", "-q", str(tree.root / "xend_actors")],
                   check=True, stdout=subprocess.DEVNULL, env=env)


def import_modules(tree: Tree) -> int:
    """How many modules importing the daemon and its command loads in the tree's Python."""
    done = subprocess.run(
        [tree.python, "-c", "import sys, xend_actors.cli, xend_actors.daemon; "
                            "print(len(sys.modules))"],
        check=True, capture_output=True, text=True, cwd="/")
    return int(done.stdout)


@contextlib.contextmanager
def started(tree: Tree) -> Iterator[tuple[XendHome, int]]:
    """A xend of ``tree`` on the sim, started with ``xend start``; its home and pid."""
    home = new_home(bench_config())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def xend(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tree.xend, "--config", str(home.config_file), *args],
                              capture_output=True, text=True, timeout=300, env=env,
                              stdin=subprocess.DEVNULL)

    try:
        done = xend("start")
        if done.returncode != 0:
            raise RuntimeError(f"{tree.name}: xend did not start: {done.stderr.strip()}")
        pid = home.pid()
        assert pid is not None
        yield home, pid
    finally:
        xend("stop")
        home.kill_simhv()
        shutil.rmtree(home.root, ignore_errors=True)


def settled(pid: int) -> dict[str, int]:
    """/proc figures once the RSS holds still (two reads 0.5 s apart within 64 KiB)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    last = proc_status(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = proc_status(pid)
        if abs(now["VmRSS"] - last["VmRSS"]) <= SETTLE_STEP_KIB:
            return now
        last = now
    return last


def started_modules(home: XendHome) -> int | None:
    """The modules the running xend holds, from its debug port; None if it cannot say (an
    older xend: no debug socket, or no such request)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(str(home.debug_socket))
        except OSError:
            return None
        sock.sendall(b"(sys.modules)\n")
        parser = sxp.Parser()
        while data := sock.recv(1 << 20):
            parser.input(data)
            while parser.ready():
                reply = parser.get_val()
                if sxp.name(reply) == "ok":
                    return len(reply[1])
                if sxp.name(reply) == "err":
                    return None
    return None


def measure(tree: Tree, domains: int, cycles: int) -> Figures:
    figures = Figures(import_modules=import_modules(tree))
    with started(tree) as (home, pid), XendClient(unix_path=home.unix_path) as client:
        client.xend_domains()
        idle = settled(pid)
        figures.idle_kib, figures.idle_threads = idle["VmRSS"], idle["Threads"]
        figures.started_modules = started_modules(home)
        print(f"{tree.name}: idle {idle['VmRSS'] / 1024:.1f} MiB; {cycles} save/restore "
              "cycles ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="xend-bench-") as work:
            image = str(Path(work) / "cycle.save")
            create_guest(client, 0)
            client.xend_domain_unpause("bench-0000")
            for cycle in range(cycles):
                client.xend_domain_save("bench-0000", image)
                client.xend_domain_restore(image)
                os.unlink(image)
                if cycle == 0:
                    figures.cycle_first_kib = settled(pid)["VmRSS"]
            figures.cycle_last_kib = settled(pid)["VmRSS"]
        client.xend_domain_destroy("bench-0000", "halt")
        print(f"{tree.name}: {domains} domains ...", flush=True)
        before = settled(pid)
        for number in range(1, domains + 1):
            create_guest(client, number)
        after = settled(pid)
        figures.domains_before_kib, figures.threads_before = before["VmRSS"], before["Threads"]
        figures.domains_after_kib, figures.threads_after = after["VmRSS"], after["Threads"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 domains, 10 cycles")
    parser.add_argument("--base", type=Path, default=Path("/work/base"),
                        help="the baseline tree, with its own .venv (default /work/base)")
    parser.add_argument("--domains", type=int)
    parser.add_argument("--cycles", type=int)
    args = parser.parse_args()
    domains = args.domains or (200 if args.quick else 1000)
    cycles = args.cycles or (10 if args.quick else 20)
    this, baseline = Tree("this tree", ROOT), Tree("baseline", args.base.resolve())
    for tree in (this, baseline):
        compile_tree(tree)
    new = measure(this, domains, cycles)
    base = measure(baseline, domains, cycles)

    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f} MiB"

    def per_domain(f: Figures) -> float:
        return (f.domains_after_kib - f.domains_before_kib) / domains

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    rows = [
        ["idle RSS", mib(new.idle_kib), mib(base.idle_kib), ratio(new.idle_kib, base.idle_kib)],
        ["idle threads", str(new.idle_threads), str(base.idle_threads),
         ratio(new.idle_threads, base.idle_threads)],
        ["modules: import cli + daemon", str(new.import_modules), str(base.import_modules),
         ratio(new.import_modules, base.import_modules)],
        ["modules: the started xend", str(new.started_modules or "-"),
         str(base.started_modules or "-"), "-"],
        [f"RSS after save/restore 1 of {cycles}", mib(new.cycle_first_kib),
         mib(base.cycle_first_kib), ratio(new.cycle_first_kib, base.cycle_first_kib)],
        [f"growth, save/restore 2..{cycles}", mib(new.cycle_last_kib - new.cycle_first_kib),
         mib(base.cycle_last_kib - base.cycle_first_kib), "-"],
        [f"RSS with {domains} domains", mib(new.domains_after_kib),
         mib(base.domains_after_kib), ratio(new.domains_after_kib, base.domains_after_kib)],
        ["RSS per domain", f"{per_domain(new):.1f} KiB", f"{per_domain(base):.1f} KiB",
         ratio(per_domain(new), per_domain(base))],
        ["threads per domain", f"{(new.threads_after - new.threads_before) / domains:.2f}",
         f"{(base.threads_after - base.threads_before) / domains:.2f}", "-"],
    ]
    print()
    print_table(["measure", "this tree", f"baseline ({args.base})", "ratio"], rows)


if __name__ == "__main__":
    main()
