"""The writer proof: an HA qemu guest on a disk both hosts reach never runs twice.

Two qemu xends in the pool lab (each in a namespace of its own, a three-member etcd in
namespaces of their own) share one raw disk file (the namespaces share the filesystem),
attached ``w!`` so that qemu's own image lock is off: only the fence stands between two
copies. The guest appends records to the disk in a loop — it reads the head (sector 0,
O_DIRECT), writes ``ID COUNTER SECTOR`` at the next sector and moves the head — so two
copies writing at once would leave their records interleaved, or a counter skipped
where one overwrote the other. Its host is cut off at the switch; the copy restarted on
the other host writes on as a second identity. The log must read A...A B...B, each
identity's counters whole and in order, and the first copy's fence must come before
the second copy's restart.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.qemu import BOOT_TIMEOUT, QEMU, Console, Guest, booted, vm
from tests.hosts import Host
from tests.support.netns import inside, netns_usable
from tests.support.pool_lab import PoolLab
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from xend_actors.events.event import Event

_WHY = netns_usable()
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed"),
              *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

TTL = 6.0
POOL = "qha"
SECTOR = 512
RECORD = re.compile(rb"(A|B) (\d+) (\d+) *\n")

# Appends ``$ID i n`` at sector n = head + 1, then makes n the head; direct I/O both ways,
# so each copy sees the disk, not its own cache.
WRITER = ("i=0; while :; do "
          "h=$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | tr -dc 0-9); "
          "n=$((${h:-0}+1)); "
          "printf '%-511s\\n' \"$ID $i $n\" | "
          "dd of=/dev/vda bs=512 seek=$n oflag=direct conv=notrunc 2>/dev/null; "
          "printf '%-511s\\n' $n | dd of=/dev/vda bs=512 oflag=direct conv=notrunc "
          "2>/dev/null; i=$((i+1)); sleep 0.05; done")


@pytest.fixture
def lab(reaper: Reaper) -> Iterator[PoolLab]:
    made = PoolLab(reaper)
    yield made
    made.close()


@pytest.fixture
def disk() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="xend-ha-disk-") as folder:
        path = Path(folder) / "shared.img"
        with open(path, "wb") as f:
            f.truncate(8 << 20)
        yield path


def records(disk: Path) -> list[tuple[str, int, int]]:
    """The log on the disk, by sector up to the head: (identity, counter, sector)."""
    data = disk.read_bytes()
    head = int(data[:SECTOR].strip(b" \n\0") or b"0")
    found = []
    for sector in range(1, head + 1):
        match = RECORD.fullmatch(data[sector * SECTOR:(sector + 1) * SECTOR])
        assert match is not None, (sector, data[sector * SECTOR:sector * SECTOR + 40])
        found.append((match.group(1).decode(), int(match.group(2)), int(match.group(3))))
    return found


def start_writer(host: Host, identity: str) -> Console:
    """The guest's console on ``host`` (reached inside its namespace), once booted, with
    the writer started in the background as ``identity``."""
    port = host.xend.console_port("writer")
    with inside(host.ns):
        con = Console(port)
    booted(con)
    con.run("until [ -b /dev/vda ]; do sleep 0.1; done; echo HAVE-$((1))-VDA",
            rb"HAVE-1-VDA", 30)
    con.run(f"ID={identity}; ({WRITER}) & echo WRITING-$((2))", rb"WRITING-2")
    return con


def named(host: Host, name: str) -> list[Event]:
    return [event for event in host.xend.events.all(0) if event.name == name]


def test_two_copies_of_an_ha_guest_never_write_its_shared_disk_at_once(
        lab: PoolLab, guest: Guest, disk: Path) -> None:
    cluster = lab.etcd(3)
    first, second = lab.start_xends(2, PoolLab.pool_config(
        cluster, POOL, extra=f"(xend-pool-ttl {TTL:g})\n(hypervisor qemu)\n"
                             "(qemu-accel tcg)\n"))
    for name in lab.hosts:
        wait_for(lambda n=name: cluster.get(f"/xend-pool/{POOL}/hosts/{n}"), 15)
    shared = ["device", ["vbd", ["uname", f"file:{disk}"], ["dev", "sda1"], ["mode", "w!"]]]
    first.xend.create(vm(guest, "writer", ["ha", "yes"], shared), unpause=True)
    con = start_writer(first, "A")
    try:
        wait_for(lambda: len(records(disk)) >= 20, 60, "the first copy to write")
    finally:
        con.close()

    lab.cut(lab.host_node(first))
    fenced = first.xend.events.wait("xend.pool.fenced", timeout=TTL)
    restarted = second.xend.events.wait("xend.pool.restarted", timeout=TTL + 10)
    assert restarted.value[0] == "writer"
    assert fenced.time < restarted.time
    written = len(records(disk))
    con = start_writer(second, "B")
    try:
        wait_for(lambda: len(records(disk)) >= written + 20, BOOT_TIMEOUT,
                 "the second copy to write")
    finally:
        con.close()
    lab.mend(lab.host_node(first))

    log = records(disk)
    identities = "".join(identity for identity, _, _ in log)
    assert re.fullmatch(r"A+B+", identities), identities
    for identity in "AB":
        counters = [counter for who, counter, _ in log if who == identity]
        assert counters == list(range(len(counters))), (identity, counters)
    assert [sector for _, _, sector in log] == list(range(1, len(log) + 1))
    assert named(first, "xend.pool.restarted") == []
