"""Pool-wide names (issue 18, Deliver 3), with real xends in one pool on a real etcd: a
name is claimed in etcd in the same step that admits a create, so two hosts never run
two domains of one name; it is free again once its domain is destroyed for good, a
create that fails leaves no claim, and a claim left by a xend killed between its claim
and its domain is released at its next start. With etcd unreachable no new name is
taken (503), while the domains that are here are managed as ever; once etcd answers
again the claims of domains destroyed meanwhile are released.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd import EtcdCluster
from tests.support.home import new_home
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import Xend, run_xm, sim_vm
from xend_actors import sxp

pytestmark = pytest.mark.integration

POOL = "names"
TTL = 4


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(1)
    yield cluster
    cluster.close()


def member(cluster: EtcdCluster, name: str) -> str:
    return (f"(xend-pool {POOL})\n(xend-pool-etcd '{cluster.urls}')\n"
            f"(xend-pool-host {name})\n(xend-pool-ttl {TTL})\n")


@pytest.fixture(scope="module")
def hosts(etcd: EtcdCluster, reaper: Reaper) -> Iterator[dict[str, Xend]]:
    homes = {name: new_home(member(etcd, name)) for name in ("h1", "h2")}
    xends = {name: Xend(home) for name, home in homes.items()}
    for xend in xends.values():
        xend.start()
    wait_for(lambda: len(etcd.get_prefix(f"/xend-pool/{POOL}/hosts/")) == 2, 20,
             "both members registered")
    yield xends
    for name, home in homes.items():
        reaper.submit(f"pool member {name}", home.tear_down)


@pytest.fixture
def pool(hosts: dict[str, Xend], etcd: EtcdCluster) -> Iterator[dict[str, Xend]]:
    yield hosts
    etcd.start_all()
    for xend in hosts.values():
        xend.destroy_all_but({"Domain-0"})


def claim(etcd: EtcdCluster, name: str) -> str | None:
    held = etcd.get(f"/xend-pool/{POOL}/names/{name}")
    return None if held is None else held.decode()


def names(xend: Xend) -> set[str]:
    return {str(sxp.child_value(d, "name")) for d in xend.get_sxp("/xend/domain/", detail=1)
            if isinstance(d, list)} - {"Domain-0"}


def test_two_creates_of_one_name_on_two_hosts_exactly_one_wins(
        pool: dict[str, Xend], etcd: EtcdCluster) -> None:
    racing = [f"race{i}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(2) as both:
        for name in racing:
            config = sxp.show(sim_vm(name))
            sent = {host: both.submit(xend.post, "/xend/domain/", op="create", config=config)
                    for host, xend in pool.items()}
            replies = {host: future.result() for host, future in sent.items()}
            won = [host for host, reply in replies.items() if reply.status_code == 201]
            assert len(won) == 1, {h: (r.status_code, r.text) for h, r in replies.items()}
            [lost] = [host for host in pool if host not in won]
            assert replies[lost].status_code == 409
            assert f"{name} is held by pool member {won[0]}" in replies[lost].text
            assert claim(etcd, name) == won[0]
    everywhere = [names(xend) for xend in pool.values()]
    assert everywhere[0] | everywhere[1] == set(racing)
    assert not everywhere[0] & everywhere[1]


def test_a_destroyed_domains_name_is_free_for_another_host(
        pool: dict[str, Xend], etcd: EtcdCluster) -> None:
    pool["h1"].create(sim_vm("free"))
    assert pool["h2"].post("/xend/domain/", op="create",
                           config=sxp.show(sim_vm("free"))).status_code == 409
    assert pool["h1"].op("free", "destroy", reason="halt").status_code == 200
    wait_for(lambda: claim(etcd, "free") is None, 10, "the claim of free released")
    pool["h2"].create(sim_vm("free"))
    assert claim(etcd, "free") == "h2"


def test_a_create_that_fails_leaves_no_claim(
        pool: dict[str, Xend], etcd: EtcdCluster) -> None:
    too_big = sim_vm("greedy", memory=1_000_000)
    reply = pool["h1"].post("/xend/domain/", op="create", config=sxp.show(too_big))
    assert reply.status_code >= 400
    wait_for(lambda: claim(etcd, "greedy") is None, 10, "the failed create's claim released")
    assert "greedy" not in names(pool["h1"])


def test_etcd_unreachable_refuses_new_names_while_local_domains_are_managed(
        pool: dict[str, Xend], etcd: EtcdCluster, tmp_path: Path) -> None:
    pool["h1"].create(sim_vm("kept"), unpause=True)
    pool["h1"].create(sim_vm("gone"))
    etcd.stop_all()

    reply = pool["h1"].post("/xend/domain/", op="create", config=sxp.show(sim_vm("new")))
    assert reply.status_code == 503
    assert "the pool's etcd is unreachable" in reply.text
    config = tmp_path / "new2.sxp"
    config.write_text(sxp.show(sim_vm("new2")))
    done = run_xm(pool["h1"].home, "create", "-F", str(config))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "etcd is unreachable" in done.stderr

    assert pool["h1"].op("kept", "pause").status_code == 200
    assert pool["h1"].op("kept", "unpause").status_code == 200
    assert pool["h1"].op("gone", "destroy", reason="halt").status_code == 200
    assert names(pool["h1"]) == {"kept"}

    etcd.start_all()
    wait_for(lambda: claim(etcd, "gone") is None, 3 * TTL,
             "the claim of the domain destroyed while etcd was away released")
    assert claim(etcd, "kept") == "h1"
    assert pool["h2"].post("/xend/domain/", op="create",
                           config=sxp.show(sim_vm("gone"))).status_code == 201


def test_a_claim_a_killed_xend_left_is_released_at_its_next_start(
        pool: dict[str, Xend], etcd: EtcdCluster) -> None:
    # what a xend killed between its claim and its intent leaves
    etcd.put(f"/xend-pool/{POOL}/names/orphan", "h2")
    pool["h2"].home.kill9()
    pool["h2"].start()
    wait_for(lambda: claim(etcd, "orphan") is None, 3 * TTL, "the orphan claim released")
