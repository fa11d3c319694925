"""The cost of a pool on a single create (issue 18's aim: at most 1.2 times the create of
a xend on its own).

Two xends on the sim, started side by side in one run: one on its own, one a member of
a pool on a real etcd (one member, loopback). Each round creates a domain on each and
unpauses it (the order alternating, so that neither always goes first), then destroys
both; the figure is create + unpause as a client sees it over the Unix socket. A pool
member claims the name in etcd (one transaction, which etcd commits with an fsync of
its WAL) before the domain's intent is written.

    python bench/pool_create.py [--rounds 100] [--etcd-dir DIR] [--qemu]

``--qemu``: the same with two qemu xends and the test guest (TCG), where a create
launches a real qemu: what the pool adds is the same, on a create some five times
longer.

``--etcd-dir``: where etcd keeps its data (default: beside the xends' folders, on the
same file system as their dbroot, /tmp); /dev/shm shows what the fsync costs.

Where the time goes (2 cores shared with other work, load 3 to 5): the pool adds to the
create only, not to the unpause: some 3 to 4 ms, most of it the claim. Timed inside xend
(80 rounds, etcd on the dbroot's disk): the table's create took 2.9 ms alone and 5.5 ms
in the pool, of which the claim (``EtcdNames.claim``) 2.05 ms: one etcd transaction,
whose commit fsyncs etcd's WAL (1.6 ms with etcd on /dev/shm). The rest is spread thin
(etcd's own CPU on two busy cores is the likeliest); it is not the member's publishing:
a pool xend without its PoolMember cost the same, and so did rounds 0.2 s apart. The
ratio was 1.29 to 1.33 with etcd on the same disk as the dbroot, 1.19 to 1.27 with etcd
on tmpfs. Claiming beside the intent's write (a thread) instead of before it gained
nothing measurable.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from boot import qemu_xend
from common import percentile, running_xend, vm_config

import tests.support.etcd as etcd_support
from tests.e2e.qemu import build_guest
from tests.support.etcd import EtcdCluster
from tests.support.home import XendHome
from xend_actors import sxp
from xend_actors.client import XendClient


def qemu_tcg_xend(extra: str = "") -> AbstractContextManager[XendHome]:
    return qemu_xend(extra + "(qemu-accel tcg)\n")


def qemu_config() -> Callable[[str], sxp.Value]:
    guest = build_guest()
    return lambda name: ["vm", ["name", name], ["memory", "128"],
                         ["image", ["linux", ["kernel", guest.kernel],
                                    ["ramdisk", guest.ramdisk], ["args", "quiet"]]]]


def create_and_unpause(client: XendClient, name: str,
                       config: Callable[[str], sxp.Value] = vm_config) -> tuple[float, float]:
    """Seconds the create took, and the unpause after it."""
    start = time.perf_counter()
    client.xend_domain_create(config(name))
    created = time.perf_counter()
    client.xend_domain_unpause(name)
    return created - start, time.perf_counter() - created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds between rounds (a member publishes what changed "
                             "50 ms after it: with a gap, a create does not run beside it)")
    parser.add_argument("--etcd-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="the folder etcd's data goes in (default: /tmp, where the "
                             "xends' dbroots are)")
    parser.add_argument("--qemu", action="store_true",
                        help="qemu xends and the test guest instead of the sim")
    args = parser.parse_args()
    xend = qemu_tcg_xend if args.qemu else running_xend
    config = qemu_config() if args.qemu else vm_config
    etcd_support.BASE = args.etcd_dir  # where the cluster's folder is made
    etcd = EtcdCluster(1)
    print(f"etcd data in {etcd.folder}")
    pool = (f"(xend-pool bench)\n(xend-pool-etcd '{etcd.urls}')\n(xend-pool-host b0)\n")
    try:
        with xend() as alone_home, xend(pool) as pooled_home:
            print(f"xend dbroots: {alone_home.dbroot}, {pooled_home.dbroot}")
            alone = XendClient(unix_path=alone_home.unix_path)
            pooled = XendClient(unix_path=pooled_home.unix_path)
            times: dict[str, list[tuple[float, float]]] = {"alone": [], "pool": []}
            for warm in range(5):
                for client in (alone, pooled):
                    create_and_unpause(client, f"warm-{warm}", config)
                    client.xend_domain_destroy(f"warm-{warm}", "halt")
            for number in range(args.rounds):
                order = [("alone", alone), ("pool", pooled)]
                if number % 2:
                    order.reverse()
                for label, client in order:
                    times[label].append(create_and_unpause(client, f"bench-{number:04d}",
                                                           config))
                for _, client in order:
                    client.xend_domain_destroy(f"bench-{number:04d}", "halt")
                time.sleep(args.gap)
            total = {label: [a + b for a, b in values] for label, values in times.items()}
            for label, values in times.items():
                print(f"{label:6s} create+unpause: median "
                      f"{statistics.median(total[label]) * 1e3:6.2f} ms  p90 "
                      f"{percentile(total[label], 0.9) * 1e3:6.2f} ms  (create "
                      f"{statistics.median(a for a, _ in values) * 1e3:.2f}, unpause "
                      f"{statistics.median(b for _, b in values) * 1e3:.2f}; n={len(values)})")
            ratio = statistics.median(total["pool"]) / statistics.median(total["alone"])
            print(f"pool / alone (medians): {ratio:.2f}x (aim <= 1.2x)")
    finally:
        etcd.close()


if __name__ == "__main__":
    main()
