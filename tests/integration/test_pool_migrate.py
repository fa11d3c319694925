"""``xm migrate --pool`` (issue 18, Deliver 4): three xends on hosts of a pool lab
(``tests/support/pool_lab.py``: network namespaces on one bridge, the pool's etcd in a
node of its own), members of one pool, their relocation servers on with mutual TLS.

The domain goes to the other member that has room for it: not to the one with too
little free memory, never to its own host; it runs on there, and the pool's claim of its
name follows it. A domain no other member has room for stays where it is, running. Asked
of a member that does not run it, the migration is asked of the one that does (with the
pool's token, over HTTPS pinned to its certificate).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts import Host
from tests.support.etcd import EtcdCluster
from tests.support.netns import netns_usable
from tests.support.pool_lab import PoolLab
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import XM, Xend, sim_vm
from xend_actors import sxp
from xend_actors.access.pool_token import make_pool_token

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

POOL = "moves"
# Each host's sim memory, MB: Domain-0 keeps 512 of each, so h2 has 512 free.
MEMORY = {"h1": 4096, "h2": 1024, "h3": 4096}
SOURCE, SMALL, ROOMY = MEMORY


@pytest.fixture(scope="module")
def lab(reaper: Reaper) -> Iterator[tuple[EtcdCluster, dict[str, Host]]]:
    made = PoolLab(reaper)
    folder = Path(tempfile.mkdtemp(prefix="xend-pooltoken-"))
    try:
        make_pool_token(folder / "token")
        cluster = made.etcd(1)
        member = PoolLab.pool_config(
            cluster, POOL, f"(xend-pool-ttl 4)\n(xend-pool-token-file {folder / 'token'})\n")

        def config(name: str, address: str) -> str:
            issued = made.pki.issue(f"xend-{name}-{address}", ips=(address,))
            return (f"(sim-memory {MEMORY[name]})\n(xend-relocation-server yes)\n"
                    f"(xend-relocation-address {address})\n"
                    + sxp.show(["xend-relocation-hosts-allow", re.escape(made.subnet) + r"\..*"])
                    + "\n" + issued.relocation_config() + member(name, address))

        hosts = dict(zip(MEMORY, made.start_xends(len(MEMORY), config), strict=True))
        wait_for(lambda: len(cluster.get_prefix(f"/xend-pool/{POOL}/hosts/")) == len(MEMORY),
                 20, "every member to join")
        yield cluster, hosts
    finally:
        made.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_xm_migrate_pool_moves_the_domain_to_the_member_with_room(
        lab: tuple[EtcdCluster, dict[str, Host]]) -> None:
    etcd, hosts = lab
    entries = {k.rsplit("/", 1)[1]: json.loads(v)
               for k, v in etcd.get_prefix(f"/xend-pool/{POOL}/hosts/").items()}
    roomy = hosts[ROOMY].address
    assert entries[ROOMY]["relocation"] == f"{roomy}:8002"
    assert entries[SMALL]["free_mb"] < 768 < entries[ROOMY]["free_mb"], entries
    source: Xend = hosts[SOURCE].xend
    source.create(sim_vm("mover", memory=768), unpause=True)

    done = subprocess.run([XM, "--unix", str(source.home.unix_path), "migrate", "--pool",
                           "-l", "mover"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"http://{re.escape(roomy)}:8002/xend/domain/\d+\n", done.stdout), \
        done.stdout
    assert f"Migrated domain mover to pool member {ROOMY}" in done.stderr

    assert "mover" not in hosts[SOURCE].names()
    assert "mover" in hosts[ROOMY].names() and "p" not in hosts[ROOMY].xend.state("mover")
    assert "mover" not in hosts[SMALL].names()
    assert etcd.get(f"/xend-pool/{POOL}/names/mover") == ROOMY.encode()


def test_a_domain_no_other_member_has_room_for_stays_where_it_is(
        lab: tuple[EtcdCluster, dict[str, Host]]) -> None:
    etcd, hosts = lab
    source = hosts[SOURCE].xend
    roomy = hosts[ROOMY].xend
    roomy.create(sim_vm("filler", memory=1024), unpause=True)  # whatever ran before
    try:
        wait_for(lambda: json.loads(etcd.get(f"/xend-pool/{POOL}/hosts/{ROOMY}") or b"{}"
                                    ).get("free_mb", 4096) < 3500, 10, "the filler counted")
        source.create(sim_vm("stayer", memory=3500), unpause=True)
        reply = source.post("/xend/pool/", op="migrate", dom="stayer", live="1")
        message = Xend.error(reply, 409)
        assert message.startswith("no pool member has room for domain stayer: it needs "
                                  "3500 MB, the most free is "), message
        assert message.endswith(f"(on {ROOMY})"), message
        assert "p" not in source.state("stayer")
    finally:
        roomy.destroy_all_but({"Domain-0", "mover"})


def test_a_pool_migration_asked_of_another_member_is_done_by_the_domain_s(
        lab: tuple[EtcdCluster, dict[str, Host]]) -> None:
    etcd, hosts = lab
    hosts[SOURCE].xend.create(sim_vm("asked", memory=64), unpause=True)
    done = subprocess.run([XM, "--unix", str(hosts[SMALL].home.unix_path), "migrate",
                           "--pool", "asked"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert f"Migrated domain asked to pool member {ROOMY}" in done.stderr
    assert "asked" in hosts[ROOMY].names() and "asked" not in hosts[SOURCE].names()
    assert "asked" not in hosts[SMALL].names()
    assert etcd.get(f"/xend-pool/{POOL}/names/asked") == ROOMY.encode()
