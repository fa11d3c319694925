"""Live migration over mutual TLS, beside the same migration over plain TCP.

Two pairs of xends run on 127.0.0.1, each xend a relocation server on a port of its own:
one pair speaks mutual TLS (each xend presents a certificate for 127.0.0.1 from one test
CA, ``tests/support/pki.py``, and checks the other's), the other pair says
``(xend-relocation-tls no)``. A guest moves back and forth within each pair, live
(``op=migrate live=1``, unthrottled); the rounds alternate which pair goes first. A
migration's time is its request's, from the source's ``XendClient``; its downtime is
the one xend reports in its ``xend.domain.migrate ... ok`` event.

* sim: a sim guest of 512 MiB (its pages are a pattern, streamed and hashed by both
  xends: the whole cost is xend's and the connection's);
* qemu: the test guest (``tests/guest/build``, 128 MiB) under tcg, its stream relayed by
  both xends; skipped without qemu.

Ratios are medians of the paired rounds' ratios (TLS / plain), as the host's other load
slows both sides of a round alike. The aim is at most 1.3x.

    python bench/relocation_tls.py            # 9 rounds of each
    python bench/relocation_tls.py --quick    # 3 rounds of each
    python bench/relocation_tls.py --only qemu
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import XendClient, print_table, sxp
from transfer import console_prompt, migrate_downtime

from tests.e2e.qemu import QEMU, QEMU_CONFIG, build_guest, vm
from tests.support.home import XendHome, new_home
from tests.support.pki import Authority
from tests.support.ports import free_port
from tests.support.processes import kill_guests

SIM_MB = 512
AIM = 1.3


@dataclass
class Pair:
    """Two xends a guest moves between; ``here`` is the one it runs on."""

    homes: list[XendHome]
    ports: list[int]
    clients: list[XendClient] = field(default_factory=list)
    here: int = 0

    def migrate(self, name: str) -> tuple[float, float]:
        """Move ``name`` to the other xend, live: (seconds, downtime)."""
        there = 1 - self.here
        began = time.perf_counter()
        self.clients[self.here].xend_domain_migrate(name, f"127.0.0.1:{self.ports[there]}",
                                                    live=1)
        took = time.perf_counter() - began
        downtime = migrate_downtime(self.homes[self.here], name)
        self.here = there
        return took, downtime

    @property
    def client(self) -> XendClient:
        return self.clients[self.here]


@contextlib.contextmanager
def pair(extra: str, pki: Authority | None) -> Iterator[Pair]:
    """Two started xends with ``extra`` config, relocation servers on 127.0.0.1: over
    mutual TLS with certificates from ``pki``, or plain TCP without."""
    made = Pair([], [])
    try:
        for number in range(2):
            port = free_port()
            if pki is None:
                tls = "(xend-relocation-tls no)\n"
            else:
                tls = pki.issue(f"xend-{port}-{number}", ips=("127.0.0.1",)).relocation_config()
            home = new_home(extra + tls + "(xend-relocation-server yes)\n"
                            f"(xend-relocation-port {port})\n"
                            "(xend-relocation-address 127.0.0.1)\n")
            made.homes.append(home)
            made.ports.append(port)
            started = home.xend("start")
            if started.returncode != 0:
                raise RuntimeError(f"xend did not start: {started.stderr.strip()}")
            made.clients.append(XendClient(unix_path=home.unix_path, timeout=300))
        yield made
    finally:
        for client in made.clients:
            client.close()
        for home in made.homes:
            home.xend("stop")
            home.kill_simhv()
            kill_guests(home.run_dir)
            shutil.rmtree(home.root, ignore_errors=True)


def sim_vm(name: str) -> sxp.Value:
    return ["vm", ["name", name], ["memory", str(SIM_MB)],
            ["image", ["linux", ["kernel", "/boot/vmlinuz-sim"], ["root", "/dev/sda1 ro"]]]]


def measure(kind: str, rounds: int, pki: Authority) -> dict[str, list[float]]:
    """``rounds`` paired live migrations of a ``kind`` guest over TLS and over plain TCP."""
    figures: dict[str, list[float]] = {k: [] for k in (
        "tls time", "plain time", "tls downtime", "plain downtime")}
    extra = QEMU_CONFIG if kind == "qemu" else ""
    name = f"mover-{kind}"
    config = vm(build_guest(), name) if kind == "qemu" else sim_vm(name)
    with pair(extra, pki) as secure, pair(extra, None) as plain:
        pairs = {"tls": secure, "plain": plain}
        for each in pairs.values():
            each.client.xend_domain_create(config)
            each.client.xend_domain_unpause(name)
            ready(kind, each, name)
        print(f"{rounds} rounds of a live migration of the {kind} guest each way ...",
              flush=True)
        for round_ in range(rounds):
            order = ("tls", "plain") if round_ % 2 == 0 else ("plain", "tls")
            for side in order:
                took, downtime = pairs[side].migrate(name)
                figures[f"{side} time"].append(took)
                figures[f"{side} downtime"].append(downtime)
                ready(kind, pairs[side], name)
    return figures


def ready(kind: str, where: Pair, name: str) -> None:
    """The guest runs where it is now: a qemu guest answers on its console."""
    if kind == "qemu":
        console_prompt(where.client, name)
    else:
        info = where.client.xend_domain(name)
        assert sxp.child_value(info, "state") in ("-b---", "r----"), info


def report(kind: str, figures: dict[str, list[float]]) -> list[list[str]]:
    def ms(key: str) -> str:
        return f"{1000 * statistics.median(figures[key]):.0f}"

    def ratio(what: str) -> str:
        pairs = zip(figures[f"tls {what}"], figures[f"plain {what}"], strict=True)
        return f"{statistics.median(t / p for t, p in pairs):.2f}x"

    return [[f"{kind}: plain TCP (baseline)", ms("plain time"), ms("plain downtime")],
            [f"{kind}: mutual TLS", ms("tls time"), ms("tls downtime")],
            [f"{kind}: TLS / plain", ratio("time"), ratio("downtime")]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", choices=("sim", "qemu"), help="one guest only")
    args = parser.parse_args()
    kinds = {"sim": 3 if args.quick else 9, "qemu": 3 if args.quick else 9}
    if QEMU is None:
        del kinds["qemu"]
    if args.only:
        kinds = {args.only: kinds[args.only]}
    folder = Path(tempfile.mkdtemp(prefix="bench-pki-"))
    rows: list[list[str]] = []
    try:
        pki = Authority(folder)
        for kind, rounds in kinds.items():
            rows += report(kind, measure(kind, rounds, pki))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print(f"Live migrations between two xends on 127.0.0.1, medians in ms; {kinds} paired "
          f"rounds ({os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}); "
          f"the aim is TLS / plain <= {AIM}x.")
    print(f"sim guest {SIM_MB} MiB; qemu guest: the test guest under tcg.")
    print()
    print_table(["migration", "live migrate", "downtime"], rows)


if __name__ == "__main__":
    main()
