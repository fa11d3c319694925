"""HA in a pool, with real etcd and real xends on loopback: a member that loses etcd
fences its HA domains (and only those) before its lease can expire; a dead member's HA
domain is restarted on exactly one other member within the TTL and a few seconds; a
member back from a short blip restarts its own HA domain."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence

import pytest

from tests.support.etcd import EtcdCluster
from tests.support.home import new_home
from tests.support.processes import wait_for
from tests.support.xend import Xend, sim_vm
from xend_actors import sxp
from xend_actors.events.event import Event

TTL = 4.0  # seconds: short, so that the tests are; the fence comes at half of it
POOL = "hat"


def member_config(cluster: EtcdCluster, host: str, ttl: float = TTL) -> str:
    return (f"(xend-pool {POOL})\n{cluster.xend_config(host)}(xend-pool-host {host})\n"
            f"(xend-pool-ttl {ttl:g})\n")


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    made = EtcdCluster(size=1)
    try:
        yield made
    finally:
        made.close()


def start_members(cluster: EtcdCluster, count: int, ttl: float = TTL,
                  extra: Sequence[str] = ()) -> list[Xend]:
    """``count`` members h0, h1...; ``extra``: each one's own config lines, if any."""
    homes = [new_home((extra[i] if i < len(extra) else "") + member_config(cluster, f"h{i}", ttl))
             for i in range(count)]
    xends = []
    for home in homes:
        home.start()
        xends.append(Xend(home))
    for xend in xends:
        wait_for(lambda x=xend: cluster.get(f"/xend-pool/{POOL}/hosts/{host_of(x)}"),
                 10, "the member to join")
    return xends


def host_of(xend: Xend) -> str:
    return str(xend.home.config_file.read_text().split("(xend-pool-host ")[1].split(")")[0])


def tear_down(xends: list[Xend]) -> None:
    for xend in xends:
        xend.close()
        xend.home.tear_down()


def ha_vm(name: str) -> sxp.Value:
    return sim_vm(name, ["ha", "yes"])


def running(xend: Xend) -> list[str]:
    """The guests this member runs, Domain-0 aside ([] if its xend is down)."""
    if not xend.home.alive():
        return []
    return [name for name in xend.names() if name != "Domain-0"]


def claim(cluster: EtcdCluster, name: str) -> str | None:
    held = cluster.get(f"/xend-pool/{POOL}/names/{name}")
    return None if held is None else held.decode()


def events_named(xend: Xend, name: str) -> list[Event]:
    return [event for event in xend.events.all(0) if event.name == name]


def test_a_member_cut_off_from_etcd_fences_its_ha_domain_only_and_restarts_it_when_back(
        cluster: EtcdCluster) -> None:
    [xend] = start_members(cluster, 1)
    try:
        xend.create(ha_vm("guarded"), unpause=True)
        xend.create(sim_vm("plain"), unpause=True)
        assert claim(cluster, "guarded") == "h0"
        etcd = cluster.members[0]
        assert etcd.process is not None
        # Stopped, not killed: every call to it hangs until its timeout, as on a cut link.
        os.kill(etcd.process.pid, signal.SIGSTOP)
        stopped = time.time()
        try:
            fenced = xend.events.wait("xend.pool.fenced", timeout=TTL)
            took = fenced.time - stopped
            # The last renewal that worked was sent before the stop: the fence comes
            # within half the TTL of it, with a margin for the destroy.
            assert took <= TTL / 2 + 1, took
            assert fenced.value == ["h0", ["domains", "guarded"]]
            assert running(xend) == ["plain"]
            assert xend.state("plain")[1] != "p"  # untouched: running as before
        finally:
            os.kill(etcd.process.pid, signal.SIGCONT)
        # Back, nobody took it over (no other member): its claim is still ours, and the
        # member restarts it here.
        restarted = xend.events.wait("xend.pool.restarted", timeout=TTL + 10)
        assert restarted.value[0] == "guarded" and restarted.value[2] == "h0"
        wait_for(lambda: sorted(running(xend)) == ["guarded", "plain"], 10)
        assert claim(cluster, "guarded") == "h0"
    finally:
        tear_down([xend])


def test_the_ha_domain_of_a_dead_member_runs_on_exactly_one_other_within_the_ttl(
        cluster: EtcdCluster) -> None:
    xends = start_members(cluster, 3)
    try:
        first = xends[0]
        first.create(ha_vm("survivor"), unpause=True)
        first.create(sim_vm("mortal"), unpause=True)
        # The host dies: its xend and its hypervisor (its guests) at once.
        first.home.kill9()
        first.home.kill_simhv()
        died = time.time()
        others = xends[1:]

        def where() -> list[str]:
            return [host_of(x) for x in others if "survivor" in running(x)]

        hosts = wait_for(where, TTL + 5, "the HA domain to run on another member")
        took = time.time() - died
        assert took <= TTL + 3, took
        time.sleep(2)  # a second restart, were there one, would come within a poll
        assert where() == hosts and len(hosts) == 1, where()
        winner = next(x for x in others if host_of(x) == hosts[0])
        assert claim(cluster, "survivor") == hosts[0]
        assert [e.value[0] for e in events_named(winner, "xend.pool.restarted")] == \
            ["survivor"]
        loser = next(x for x in others if x is not winner)
        assert events_named(loser, "xend.pool.restarted") == []
        assert winner.state("survivor")[0] == "r" or winner.state("survivor")[1] != "p"
        # The non-HA domain is not restarted anywhere; its name stays the dead member's.
        assert all("mortal" not in running(x) for x in others)
        assert claim(cluster, "mortal") == "h0"
    finally:
        tear_down(xends)


def test_a_member_back_after_its_ha_domain_moved_does_not_run_it_again(
        cluster: EtcdCluster) -> None:
    xends = start_members(cluster, 2)
    try:
        first, second = xends
        first.create(ha_vm("mover"), unpause=True)
        first.create(sim_vm("stayer"), unpause=True)
        # xend killed, and its fencing watchdog with it (else the watchdog destroys the
        # HA domain before the lease ends: test_pool_watchdog.py): its guests are left
        # running, and the other member restarts the HA domain after the TTL.
        first.home.kill9()
        first.home.kill_fence()
        wait_for(lambda: "mover" in running(second), TTL + 5, "the restart elsewhere")
        first.start()
        # Its reconcile destroys its own copy of the moved domain, keeps the other.
        moved = first.events.wait("xend.pool.moved", timeout=TTL + 5)
        assert moved.value == ["mover", "h1"]
        wait_for(lambda: running(first) == ["stayer"], 10, "the moved copy gone")
        time.sleep(1)
        assert running(first) == ["stayer"] and "mover" in running(second)
        assert claim(cluster, "mover") == "h1" and claim(cluster, "stayer") == "h0"
    finally:
        tear_down(xends)


def test_a_restart_that_fails_on_the_winner_is_handed_on_to_another_member(
        cluster: EtcdCluster) -> None:
    # h1 has the most room, so it tries first, but one cpu: the domain, pinned to the
    # fourth, cannot be made there. h2 can.
    xends = start_members(cluster, 3, extra=["(sim-cpus 4)\n", "(sim-cpus 1)\n(sim-memory 65536)\n",
                                             "(sim-cpus 4)\n"])
    try:
        first, roomy, able = xends
        first.create(sim_vm("pinned", ["ha", "yes"], ["cpu", "3"]), unpause=True)
        first.home.kill9()
        first.home.kill_simhv()
        failed = roomy.events.wait("xend.pool.restart_failed", timeout=TTL + 5)
        assert failed.value[:2] == ["pinned", "h0"]
        restarted = able.events.wait("xend.pool.restarted", timeout=2 * TTL + 5)
        assert restarted.value[0] == "pinned" and restarted.value[2] == "h0"
        assert failed.time < restarted.time
        assert "pinned" in running(able) and "pinned" not in running(roomy)
        assert claim(cluster, "pinned") == "h2"
    finally:
        tear_down(xends)
