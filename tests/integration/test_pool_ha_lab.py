"""HA across a partition, in the pool lab (three xends, each in a namespace of its own,
and a three-member etcd cluster in namespaces of their own, on one bridge): a host cut
off at the switch fences its HA domain before another member starts it, the domain
runs again on exactly one other member within the TTL and a few seconds, the host's
other domain runs on through it all, and once the host is joined again it does not
start the moved domain."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.hosts import Host
from tests.support.etcd import EtcdCluster
from tests.support.netns import netns_usable
from tests.support.pool_lab import PoolLab
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import sim_vm
from xend_actors.events.event import Event

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

TTL = 4.0
POOL = "halab"


@pytest.fixture
def lab(reaper: Reaper) -> Iterator[PoolLab]:
    made = PoolLab(reaper)
    yield made
    made.close()


def started(lab: PoolLab) -> tuple[EtcdCluster, list[Host]]:
    cluster = lab.etcd(3)
    hosts = lab.start_xends(3, PoolLab.pool_config(cluster, POOL,
                                                   extra=f"(xend-pool-ttl {TTL:g})\n"))
    for name in lab.hosts:
        wait_for(lambda n=name: cluster.get(f"/xend-pool/{POOL}/hosts/{n}"), 15,
                 f"{name} to join")
    return cluster, hosts


def guests(host: Host) -> list[str]:
    return [name for name in host.names() if name != "Domain-0"]


def named(host: Host, name: str) -> list[Event]:
    return [event for event in host.xend.events.all(0) if event.name == name]


def test_a_partitioned_hosts_ha_domain_is_fenced_there_then_restarted_once_elsewhere(
        lab: PoolLab) -> None:
    cluster, hosts = started(lab)
    cut_host, others = hosts[0], hosts[1:]
    cut_host.xend.create(sim_vm("ha1", ["ha", "yes"]), unpause=True)
    cut_host.xend.create(sim_vm("local1"), unpause=True)
    assert cluster.get(f"/xend-pool/{POOL}/names/ha1") == b"h1"

    lab.cut(lab.host_node(cut_host))
    cut = time.time()

    def where() -> list[Host]:
        return [host for host in others if "ha1" in guests(host)]

    wait_for(where, TTL + 5, "the HA domain to run on another member")
    took = time.time() - cut
    print(f"\npartition -> HA domain running elsewhere: {took:.2f} s (TTL {TTL:g} s)")
    assert took <= TTL + 5
    [fenced] = named(cut_host, "xend.pool.fenced")
    assert fenced.value == ["h1", ["domains", "ha1"]]
    [winner] = where()
    [restarted] = named(winner, "xend.pool.restarted")
    assert restarted.value[0] == "ha1" and restarted.value[2] == "h1"
    # Same machine, same clock: the cut-off copy was gone before the new one was made.
    assert fenced.time < restarted.time, (fenced.time, restarted.time)
    assert fenced.time - cut <= TTL / 2 + 1
    assert guests(cut_host) == ["local1"]  # the cut-off host runs its other domain on

    time.sleep(2)  # a second restart, were there one, would have come by now
    assert where() == [winner]
    assert sum(len(named(host, "xend.pool.restarted")) for host in others) == 1

    # Joined again, the host finds its HA domain moved: it does not start it.
    lab.mend(lab.host_node(cut_host))
    wait_for(lambda: cluster.get(f"/xend-pool/{POOL}/hosts/h1"), TTL + 10, "h1 to rejoin")
    time.sleep(2)
    assert guests(cut_host) == ["local1"]
    assert named(cut_host, "xend.pool.restarted") == []
    assert where() == [winner]
    owner = cluster.get(f"/xend-pool/{POOL}/names/ha1")
    assert owner is not None and owner.decode() != "h1"
    assert cluster.get(f"/xend-pool/{POOL}/names/local1") == b"h1"
