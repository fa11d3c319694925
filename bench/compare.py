"""One comparison run: every row of issue 16's table, xend beside its baseline, in one sitting.

There is no libvirt here, so each row's baseline is bare qemu where there is one, and
otherwise the natural floor measured in the same run (the table says which):

* whole ``xm`` commands: ``python -c pass`` on the same interpreter;
* reads, creates and memory at N sim domains (1000; ``--quick``: 100): the same figure
  from a second sim xend holding 10 domains;
* idle RSS: a bare Python interpreter's;
* pause/unpause over the API (``XendClient``'s kept-alive HTTP on the Unix socket): raw
  QMP ``stop``/``cont`` on an open monitor socket of a bare qemu;
* a qemu create call, save, restore, destroy and live migration: the same guest under a
  bare qemu with xend's own command line, driven by raw QMP.

The measuring code is the other benchmarks' (xm_speed, http_speed, memory, boot,
transfers): this file only arranges it. Two sim xends (no TCP console ports) and, unless
skipped, two qemu xends (TCG, relocation on 127.0.0.1) with the test guest run side by
side for the whole run. In each round every measure runs once for each of its variants,
the order of the variants rotating from round to round, so the host's other load falls
on all alike; a first round warms caches and is not counted. Figures are medians over
the rounds; the ratio is xend's median over the baseline's. Memory and threads are read
once, after setting up (idle: before any domain exists).

    python bench/compare.py                      # 1000 sim domains, 15 rounds
    python bench/compare.py --quick              # 100 sim domains, 3 rounds
    python bench/compare.py --only xm-pause info # some rows (keys: --help)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boot import (
    MEMORY_MB,
    RawQmp,
    bare_prompt,
    bare_qemu,
    boot_through_xend,
    build_guest,
    pause_bare,
    pause_through_xend,
    vm_file,
)
from common import (
    XendClient,
    XendHome,
    create_guest,
    guest_name,
    load_average,
    print_table,
    running_xend,
    sxp,
)
from http_speed import Wire
from memory import settled
from transfers import (
    bare_destroy,
    bare_migrate,
    bare_prompt_on,
    bare_restore,
    bare_save,
    console_prompt,
    kill_bare,
    launch_bare,
    migrate_downtime,
    migrate_downtimes,
    qemu_xends,
    relocation_port,
    xend_destroy,
)
from xm_speed import XM, compile_packages, no_check, rows_are, timed, variants

QEMU = shutil.which("qemu-system-x86_64")
SMALL = 10  # domains in the xend the scale rows stand beside
MOVER = "mover"  # the qemu guest saved, restored and migrated
PAUSER = "pauser"  # the qemu guest paused and unpaused
DETAIL = "/xend/domain/?detail=1"

Figures = dict[str, list[float]]  # figure key -> values (ms, MiB or a count)
Turn = Callable[[], Figures]  # one variant's share of a round


@dataclass(frozen=True)
class Settings:
    domains: int
    rounds: int
    xm_runs: int  # per variant and round, likewise below
    pauses: int  # pause + unpause pairs
    infos: int
    details: int
    creates: int


FULL = Settings(domains=1000, rounds=15, xm_runs=3, pauses=50, infos=300, details=5, creates=20)
QUICK = Settings(domains=100, rounds=3, xm_runs=2, pauses=20, infos=100, details=3, creates=10)


@dataclass(frozen=True)
class Aim:
    """Issue 16's aim for a row: xend's figure at most ``most``, and at most ``ratio``
    times the baseline plus ``plus``."""

    text: str
    most: float = math.inf
    ratio: float = math.inf
    plus: float = 0.0

    def met(self, baseline: float, xend: float) -> str:
        if self.most == math.inf and self.ratio == math.inf:
            return ""
        return "yes" if xend <= self.most and xend <= self.ratio * baseline + self.plus else "NO"


@dataclass(frozen=True)
class Row:
    key: str  # for --only
    measure: str
    baseline: str  # figure keys
    xend: str
    unit: str
    what: str  # what the baseline is
    aim: Aim
    qemu: bool = False
    turns: tuple[str, ...] = ()  # the variants it needs run each round (else read at setup)


def rows(domains: int) -> list[Row]:
    n = f"{domains} domains"
    kib_a_domain = (domains - SMALL) * 64 / 1024
    return [
        Row("xm-pause", "a whole `xm pause` command", "python", "xm pause", "ms",
            "python -c pass", Aim("<= 80 ms", most=80), turns=("python", "xm pause", "xm unpause")),
        Row("xm-list", f"`xm list`, {n}", "python", "xm list", "ms", "python -c pass",
            Aim("<= 165 ms", most=165), turns=("python", "xm list")),
        Row("api-pause", "pause or unpause over the API (kept alive)", "qmp pause", "xend pause",
            "ms", "bare qemu: QMP stop/cont, open socket", Aim("<= 2 ms", most=2), qemu=True,
            turns=("qmp pause", "xend pause")),
        Row("info", f"one domain's info, {n}", "small info", "info", "ms",
            f"the same at {SMALL} domains", Aim("<= 0.25 ms", most=0.25),
            turns=("small info", "info")),
        Row("detail", f"every info in one request, {n}", "small detail", "detail", "ms",
            f"the same at {SMALL} domains", Aim("<= 25 ms", most=25),
            turns=("small detail", "detail")),
        Row("create-sim", f"create + unpause (sim), {n}", "small create", "create", "ms",
            f"the same at {SMALL} domains", Aim("<= 3 ms, <= 1.2x", most=3, ratio=1.2),
            turns=("small create", "create")),
        Row("rss-idle", "xend RSS, idle", "python rss", "idle rss", "MiB",
            "a bare python interpreter", Aim("<= 32 MiB", most=32)),
        Row("rss-domains", f"xend RSS, {n}", "small rss", "rss", "MiB",
            f"the same at {SMALL} domains", Aim("+<= 64 KiB a domain", ratio=1,
                                                plus=kib_a_domain)),
        Row("threads", f"xend threads, {n}", "small threads", "threads", "",
            f"the same at {SMALL} domains", Aim("-")),
        Row("create-qemu", "create call returns (qemu)", "bare create", "xend create", "ms",
            "bare qemu -S started, QMP answering", Aim("<= 1.1x", ratio=1.1), qemu=True,
            turns=("bare create", "xend create")),
        Row("save", "save (qemu)", "bare save", "xend save", "ms",
            "bare qemu: QMP migrate to a file", Aim("<= 1.15x", ratio=1.15), qemu=True,
            turns=("bare save", "xend save", "bare restore", "xend restore")),
        Row("restore", "restore until running (qemu)", "bare restore", "xend restore", "ms",
            "bare qemu -incoming from the file", Aim("<= 1.15x", ratio=1.15), qemu=True,
            turns=("bare save", "xend save", "bare restore", "xend restore")),
        Row("destroy", "destroy (qemu)", "bare destroy", "xend destroy", "ms",
            "bare qemu: QMP quit until exit", Aim("<= 15 ms", most=15), qemu=True,
            turns=("bare destroy", "xend destroy")),
        Row("migrate", "live migration, total (qemu)", "bare migrate", "xend migrate", "ms",
            "bare qemu to qemu on loopback", Aim("<= 1.2x", ratio=1.2), qemu=True,
            turns=("bare migrate", "xend migrate")),
        Row("downtime", "live migration, guest downtime", "bare downtime", "xend downtime",
            "ms", "bare qemu to qemu on loopback", Aim("<= 2x + 10 ms", ratio=2, plus=10),
            qemu=True, turns=("bare migrate", "xend migrate")),
    ]


def timed_ms(key: str, runs: int, act: Callable[[], object]) -> Turn:
    """A turn of ``runs`` calls of ``act``: the milliseconds of each."""
    def turn() -> Figures:
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            act()
            times.append((time.perf_counter() - began) * 1000)
        return {key: times}
    return turn


def once_ms(key: str, act: Callable[[], object]) -> Turn:
    return timed_ms(key, 1, act)


def take_turns(groups: list[dict[str, Turn]], wanted: set[str], round_: int) -> Figures:
    """One round: each group's wanted variants in turn, the order rotated by the round."""
    figures: Figures = {}
    for group in groups:
        names = [name for name in group if name in wanted]
        shift = round_ % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            for key, values in group[name]().items():
                figures.setdefault(key, []).extend(values)
    return figures


# --- the sim side -------------------------------------------------------------------------------


def python_rss_mib() -> float:
    """A bare interpreter's RSS once it has settled (it waits on its stdin)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        return settled(child.pid)["VmRSS"] / 1024
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


class SimXend:
    """A started sim xend and its client."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        # No console TCP ports: 1000 of them would race with whatever else runs here.
        self.home: XendHome = stack.enter_context(running_xend("(console-tcp no)\n"))
        self.client = stack.enter_context(XendClient(unix_path=self.home.unix_path))
        self.client.xend_domains()
        self.count = 0
        self.next = 10_000  # the numbers of the domains the create rows make and destroy

    def status(self) -> dict[str, int]:
        """VmRSS and Threads, settled."""
        pid = self.home.pid()
        assert pid is not None
        return settled(pid)

    def fill(self, count: int) -> None:
        """``count`` paused domains, the first unpaused (for ``xm pause``)."""
        for number in range(1, count + 1):
            create_guest(self.client, number)
        self.client.xend_domain_unpause(guest_name(1))
        self.count = count

    def create(self) -> None:
        create_guest(self.client, self.next)
        self.client.xend_domain_unpause(guest_name(self.next))
        self.next += 1

    def create_turn(self, key: str, runs: int) -> Turn:
        """``runs`` creates + unpauses, each timed, then their domains destroyed."""
        timed_creates = timed_ms(key, runs, self.create)

        def turn() -> Figures:
            first = self.next
            figures = timed_creates()
            for number in range(first, self.next):
                self.client.xend_domain_destroy(guest_name(number), "halt")
            return figures
        return turn

    def read_turn(self, key: str, runs: int, url: str) -> Turn:
        """``runs`` GETs of ``url`` on one kept-alive connection (xend closes idle ones, so
        each turn opens its own and sends a first request untimed)."""
        request = f"GET {url} HTTP/1.1\r\nHost: xend\r\nAccept: application/sxp\r\n\r\n"

        def turn() -> Figures:
            wire = Wire(self.home.unix_path)
            try:
                wire.exchange(request.encode())
                return timed_ms(key, runs, lambda: wire.exchange(request.encode()))()
            finally:
                wire.close()
        return turn


def sim_groups(stack: contextlib.ExitStack, settings: Settings,
               figures: Figures) -> list[dict[str, Turn]]:
    """The sim rows' variants; the memory figures, read once, go straight into ``figures``."""
    compile_packages(None)
    figures["python rss"] = [python_rss_mib()]
    small, large = SimXend(stack), SimXend(stack)
    figures["idle rss"] = [small.status()["VmRSS"] / 1024]
    small.fill(SMALL)
    large.fill(settings.domains)
    for prefix, xend in (("small ", small), ("", large)):
        status = xend.status()
        figures[f"{prefix}rss"] = [status["VmRSS"] / 1024]
        figures[f"{prefix}threads"] = [status["Threads"]]
    xm = variants(None)[0]
    env = {**xm.env, "XEND_UNIX_PATH": str(large.home.unix_path)}

    def command(key: str, argv: tuple[str, ...], check: Callable[[str], None]) -> Turn:
        return timed_ms(key, settings.xm_runs, lambda: timed(argv, env, check))

    guest = guest_name(1)
    info = f"/xend/domain/{guest_name(settings.domains // 2)}"
    small_info = f"/xend/domain/{guest_name(SMALL // 2)}"
    return [
        {"python": command("python", (sys.executable, "-c", "pass"), no_check),
         "xm pause": command("xm pause", (*xm.argv, "pause", guest), no_check),
         "xm unpause": command("xm unpause", (*xm.argv, "unpause", guest), no_check),
         "xm list": command("xm list", (*xm.argv, "list"), rows_are(settings.domains + 1))},
        {"small info": small.read_turn("small info", settings.infos, small_info),
         "info": large.read_turn("info", settings.infos, info)},
        {"small detail": small.read_turn("small detail", settings.details, DETAIL),
         "detail": large.read_turn("detail", settings.details, DETAIL)},
        {"small create": small.create_turn("small create", settings.creates),
         "create": large.create_turn("create", settings.creates)},
    ]


# --- the qemu side ------------------------------------------------------------------------------


class QemuSide:
    """Two qemu xends and bare qemus with the test guest: ``MOVER`` through xend and a
    bare one to save, restore and migrate, ``PAUSER`` through xend and a bare one to pause."""

    def __init__(self, stack: contextlib.ExitStack, settings: Settings) -> None:
        self.settings = settings
        self.guest = build_guest()
        self.work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
        stack.callback(shutil.rmtree, self.work, ignore_errors=True)
        stack.callback(kill_bare)
        self.homes = stack.enter_context(qemu_xends())
        self.xends = [stack.enter_context(XendClient(unix_path=home.unix_path))
                      for home in self.homes]
        self.here = self.bare_here = 0  # where the mover runs: which xend, which bare folder
        self.bare_dirs = [self.work / "bare-a", self.work / "bare-b"]
        self.image, self.bare_image = self.work / "xend.save", self.work / "bare.save"
        self.xends[0].xend_domain_create(self.config(MOVER))
        self.xends[0].xend_domain_unpause(MOVER)
        self.process, self.qmp = launch_bare(self.bare_dirs[0], self.guest, incoming=False)
        self.qmp.call("cont")
        boot_through_xend(self.homes[0], self.xends[0], vm_file(self.work, self.guest, PAUSER),
                          PAUSER, keep=True)
        pauser, qmp_path = stack.enter_context(bare_qemu(self.guest, "tcg"))
        bare_prompt(pauser)
        self.pause_qmp = RawQmp(qmp_path)
        stack.callback(self.pause_qmp.close)
        console_prompt(self.xends[0], MOVER)
        bare_prompt_on(self.bare_dirs[0])

    def config(self, name: str) -> sxp.Value:
        return sxp.parse(vm_file(self.work, self.guest, name).read_text())

    def xend_create(self) -> Figures:
        config = self.config("fresh")
        took = once_ms("xend create", lambda: self.xends[0].xend_domain_create(config))()
        self.xends[0].xend_domain_destroy("fresh", "halt")
        return took

    def bare_create(self) -> Figures:
        began = time.perf_counter()
        process, qmp = launch_bare(self.work / "bare-fresh", self.guest, incoming=False)
        took = (time.perf_counter() - began) * 1000
        qmp.quit(process)
        return {"bare create": [took]}

    def xend_pause(self) -> Figures:
        pairs = pause_through_xend(self.xends[0], PAUSER, self.settings.pauses)
        return {"xend pause": [1000 * pair / 2 for pair in pairs]}

    def qmp_pause(self) -> Figures:
        pairs = pause_bare(self.pause_qmp, self.settings.pauses)
        return {"qmp pause": [1000 * pair / 2 for pair in pairs]}

    def xend_save(self) -> Figures:
        return once_ms("xend save", lambda: self.xends[self.here].xend_domain_save(
            MOVER, str(self.image)))()

    def bare_save(self) -> Figures:
        return {"bare save": [1000 * bare_save(self.qmp, self.process, self.bare_image)]}

    def xend_restore(self) -> Figures:
        took = once_ms("xend restore", lambda: self.xends[self.here].xend_domain_restore(
            str(self.image)))()
        console_prompt(self.xends[self.here], MOVER)
        return took

    def bare_restore(self) -> Figures:
        took, self.process, self.qmp = bare_restore(self.bare_dirs[self.bare_here], self.guest,
                                                    self.bare_image)
        bare_prompt_on(self.bare_dirs[self.bare_here])
        return {"bare restore": [1000 * took]}

    def xend_destroy(self) -> Figures:
        return {"xend destroy": [1000 * xend_destroy(self.xends[0], self.work, self.guest)]}

    def bare_destroy(self) -> Figures:
        return {"bare destroy": [1000 * bare_destroy(self.work / "bare-doomed", self.guest)]}

    def xend_migrate(self) -> Figures:
        there = 1 - self.here
        before = len(migrate_downtimes(self.homes[self.here], MOVER))
        began = time.perf_counter()
        self.xends[self.here].xend_domain_migrate(
            MOVER, f"127.0.0.1:{relocation_port(self.homes[there])}", live=1)
        took = time.perf_counter() - began
        downtime = migrate_downtime(self.homes[self.here], MOVER, before)
        self.here = there
        console_prompt(self.xends[there], MOVER)
        return {"xend migrate": [1000 * took], "xend downtime": [1000 * downtime]}

    def bare_migrate(self) -> Figures:
        self.bare_here = 1 - self.bare_here
        took, downtime, self.process, self.qmp = bare_migrate(
            self.qmp, self.process, self.bare_dirs[self.bare_here], self.guest)
        bare_prompt_on(self.bare_dirs[self.bare_here])
        return {"bare migrate": [1000 * took], "bare downtime": [1000 * downtime]}

    def groups(self) -> list[dict[str, Turn]]:
        return [{"bare create": self.bare_create, "xend create": self.xend_create},
                {"qmp pause": self.qmp_pause, "xend pause": self.xend_pause},
                {"bare save": self.bare_save, "xend save": self.xend_save},
                {"bare restore": self.bare_restore, "xend restore": self.xend_restore},
                {"bare destroy": self.bare_destroy, "xend destroy": self.xend_destroy},
                {"bare migrate": self.bare_migrate, "xend migrate": self.xend_migrate}]


# --- the run ------------------------------------------------------------------------------------


def shown(value: float, unit: str) -> str:
    if not unit:
        return f"{value:.0f}"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {unit}"


def rounds_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a whole number of rounds, at least 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill("rows (--only): " + " ".join(row.key for row in rows(FULL.domains)),
                             break_on_hyphens=False))
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.domains} sim domains, {QUICK.rounds} rounds, fewer "
                             "samples a round; no qemu rows if qemu is missing")
    parser.add_argument("--rounds", type=rounds_count, metavar="N", help="rounds counted (default "
                        f"{FULL.rounds}, --quick {QUICK.rounds})")
    parser.add_argument("--only", nargs="+", metavar="ROW", help="just these rows")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = Settings(**{**settings.__dict__, "rounds": args.rounds})
    chosen = rows(settings.domains)
    if args.only:
        unknown = set(args.only) - {row.key for row in chosen}
        if unknown:
            parser.error(f"no such row: {' '.join(sorted(unknown))}")
        chosen = [row for row in chosen if row.key in args.only]
    skipped = ""
    if QEMU is None and any(row.qemu for row in chosen):
        if not args.quick:
            sys.exit("qemu-system-x86_64 is not installed: run with --quick to skip its rows")
        skipped = "qemu-system-x86_64 is not installed: the qemu rows are skipped"
        chosen = [row for row in chosen if not row.qemu]
    if XM is None:
        sys.exit("the xm script is not installed beside this Python (pip install -e .)")
    wanted = {turn for row in chosen for turn in row.turns}
    began, load_before = time.monotonic(), load_average()
    print(f"load average before: {load_before}; setting up ...", flush=True)
    figures: Figures = {}
    with contextlib.ExitStack() as stack:
        groups = []
        if any(not row.qemu for row in chosen):
            groups += sim_groups(stack, settings, figures)
        if any(row.qemu for row in chosen):
            groups += QemuSide(stack, settings).groups()
        print(f"set up in {time.monotonic() - began:.0f} s; a warm-up round and "
              f"{settings.rounds} rounds ...", flush=True)
        for round_ in range(settings.rounds + 1):
            taken = take_turns(groups, wanted, round_)
            if round_:
                for key, values in taken.items():
                    figures.setdefault(key, []).extend(values)
            print(f"  round {round_ or 'warm-up'} done at "
                  f"{time.monotonic() - began:.0f} s", flush=True)
    print()
    qemu = (f"; qemu rows: the {MEMORY_MB} MiB test guest, tcg"
            if any(row.qemu for row in chosen) else "")
    print(f"issue 16's table, xend beside its baseline in one sitting. Rounds: "
          f"{settings.rounds} after a warm-up, the variants' order rotating each round; "
          f"medians; {settings.domains} sim domains (memory and threads read once, after "
          f"setting up){qemu}")
    print(f"{os.cpu_count()} cpus; load average before {load_before}, after {load_average()}; "
          f"{time.monotonic() - began:.0f} s in all")
    if skipped:
        print(skipped)
    print()
    table = []
    for row in chosen:
        base, xend = (statistics.median(figures[row.baseline]),
                      statistics.median(figures[row.xend]))
        table.append([row.measure, shown(base, row.unit), shown(xend, row.unit),
                      f"{xend / base:.2f}x", row.aim.text, row.aim.met(base, xend), row.what])
    print_table(["measure", "baseline", "xend", "ratio", "aim", "met", "the baseline"], table)


if __name__ == "__main__":
    main()
