"""A pool member's fencing watchdog with real pool xends and etcd on loopback: it guards
exactly the HA names its member holds; a xend killed with ``kill -9`` (or hung) leaves
its HA domain running, and its watchdog destroys it while the member's lease still
lives, so before any other member may restart it: never two copies at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_pool_ha import (
    POOL,
    TTL,
    EtcdCluster,
    claim,
    events_named,
    ha_vm,
    running,
    start_members,
    tear_down,
)
from tests.support.processes import wait_for
from tests.support.xend import sim_vm
from xend_actors import sxp
from xend_actors.hypervisor.sim.driver import SimDriver

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    made = EtcdCluster(size=1)
    try:
        yield made
    finally:
        made.close()


def watchdog_status(run_dir: object) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(f"{run_dir}/fence.sock")
        sock.sendall(b"status\n")
        seen = b""
        while not seen.endswith(b"\n") and (data := sock.recv(65536)):
            seen += data
    return json.loads(seen)


def guarded(run_dir: object) -> list[str]:
    return list(watchdog_status(run_dir)["guarded"])


def test_the_watchdog_guards_the_ha_names_its_member_holds_and_no_other(
        cluster: EtcdCluster) -> None:
    xends = start_members(cluster, 2)
    try:
        first, second = xends
        first.create(ha_vm("guarded"), unpause=True)
        first.create(sim_vm("plain"), unpause=True)
        wait_for(lambda: guarded(first.home.run_dir) == ["guarded"], 5, "the guard")
        status = watchdog_status(first.home.run_dir)
        assert 0 < status["deadline_in"] <= TTL * 0.6, status
        # A name another member holds is refused, and not left guarded here.
        refused = second.post("/xend/domain/", op="create", config=sxp.show(ha_vm("guarded")))
        assert "held by pool member h0" in second.error(refused, 409)
        time.sleep(0.5)
        assert guarded(second.home.run_dir) == []
        # Destroyed for good: no longer guarded; a plain domain never was.
        first.ok(first.op("guarded", "destroy", reason="halt"))
        wait_for(lambda: guarded(first.home.run_dir) == [], 10, "the unguard")
        assert claim(cluster, "guarded") is None
        # Now free, the name is the other member's, and guarded there.
        second.create(ha_vm("guarded"), unpause=True)
        wait_for(lambda: guarded(second.home.run_dir) == ["guarded"], 5, "the guard there")
        assert guarded(first.home.run_dir) == []
    finally:
        tear_down(xends)


def test_a_killed_members_ha_domain_is_gone_before_another_member_restarts_it(
        cluster: EtcdCluster) -> None:
    xends = start_members(cluster, 2)
    try:
        first, second = xends
        first.create(ha_vm("mover"), unpause=True)
        first.create(sim_vm("stayer"), unpause=True)
        first.home.kill9()  # its guests, and its watchdog, run on
        killed = time.monotonic()
        here, there = SimDriver(first.home.simhv_socket), SimDriver(second.home.simhv_socket)
        fenced = None
        try:
            # Looked at on both hosts until it runs on the other: never on both at once.
            while "mover" not in {d.name for d in there.list_domains()}:
                assert time.monotonic() - killed < TTL + 10, "not restarted elsewhere"
                if fenced is None and "mover" not in {d.name for d in here.list_domains()}:
                    fenced = time.monotonic() - killed
                time.sleep(0.02)
            moved = time.monotonic() - killed
            assert "mover" not in {d.name for d in here.list_domains()}
            assert "stayer" in {d.name for d in here.list_domains()}
        finally:
            here.close()
            there.close()
        print(f"fenced {fenced:.3f} s after the kill, running on h1 {moved:.3f} s after")
        assert fenced is not None and fenced <= TTL * 0.6 + 0.5 and fenced < moved
        wait_for(lambda: "mover" in running(second), 10, "the restart elsewhere")
        # Back, it says what its watchdog did, and neither restarts nor meets a copy.
        first.start()
        said = first.events.wait("xend.pool.fenced", timeout=10)
        assert said.value == ["h0", ["domains", "mover"], ["by", "watchdog"]]
        time.sleep(TTL)
        assert running(first) == ["stayer"] and "mover" in running(second)
        assert events_named(first, "xend.pool.moved") == []
        assert claim(cluster, "mover") == "h1" and claim(cluster, "stayer") == "h0"
        assert guarded(first.home.run_dir) == [] and guarded(second.home.run_dir) == ["mover"]
    finally:
        tear_down(xends)


def test_a_killed_members_ha_domain_is_fenced_by_its_watchdog_while_its_lease_lives(
        cluster: EtcdCluster) -> None:
    [xend] = start_members(cluster, 1)
    try:
        xend.create(ha_vm("guarded"), unpause=True)
        xend.create(sim_vm("plain"), unpause=True)
        status = watchdog_status(xend.home.run_dir)
        assert status["guarded"] == ["guarded"] and 0 < status["deadline_in"] <= TTL
        xend.home.kill9()
        killed = time.monotonic()
        hv = SimDriver(xend.home.simhv_socket)
        try:
            names = lambda: {d.name for d in hv.list_domains()}  # noqa: E731
            while "guarded" in names():
                assert time.monotonic() - killed < TTL, "not fenced within the TTL"
                time.sleep(0.02)
            took = time.monotonic() - killed
            # The lease is still there: no other member could have restarted it yet.
            assert cluster.get(f"/xend-pool/{POOL}/hosts/h0") is not None
            print(f"fenced {took:.3f} s after the kill (TTL {TTL:g})")
            assert took <= TTL * 0.6 + 0.5, took
            assert "plain" in names()
        finally:
            hv.close()
        # The next xend says so, and (its claim still its own) restarts it here, guarded.
        xend.home.start()
        fenced = xend.events.wait("xend.pool.fenced", timeout=10)
        assert fenced.value == ["h0", ["domains", "guarded"], ["by", "watchdog"]]
        wait_for(lambda: sorted(running(xend)) == ["guarded", "plain"], TTL + 10)
        status = watchdog_status(xend.home.run_dir)
        assert status["guarded"] == ["guarded"] and status["fenced"] == 1
        time.sleep(TTL)  # renewed on: not fenced again
        assert sorted(running(xend)) == ["guarded", "plain"]
    finally:
        tear_down([xend])


def test_a_hung_members_ha_domain_is_fenced_by_its_watchdog_and_back_when_it_wakes(
        cluster: EtcdCluster) -> None:
    [xend] = start_members(cluster, 1)
    try:
        xend.create(ha_vm("guarded"), unpause=True)
        xend.create(sim_vm("plain"), unpause=True)
        pid = xend.home.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # hung: neither renews nor fences itself
        stopped = time.monotonic()
        hv = SimDriver(xend.home.simhv_socket)
        try:
            wait_for(lambda: "guarded" not in {d.name for d in hv.list_domains()}, TTL,
                     "the watchdog to fence")
            took = time.monotonic() - stopped
            assert cluster.get(f"/xend-pool/{POOL}/hosts/h0") is not None
        finally:
            os.kill(pid, signal.SIGCONT)
            hv.close()
        assert took <= TTL * 0.6 + 0.5, took
        # Awake, it is fenced (no renewal for too long), joins again, and restarts its
        # own HA domain here: the watchdog, armed again, lets it be.
        wait_for(lambda: sorted(running(xend)) == ["guarded", "plain"], TTL + 15,
                 "the HA domain back")
        # Its own fence, which found nothing left to destroy, and the watchdog's (told
        # at its join, or at a renewal after if the watchdog wrote it down only then).
        wait_for(lambda: len(events_named(xend, "xend.pool.fenced")) == 2, TTL,
                 "both fences told")
        assert [e.value for e in events_named(xend, "xend.pool.fenced")] == [
            ["h0", ["domains", "guarded"]],
            ["h0", ["domains", "guarded"], ["by", "watchdog"]]]
        time.sleep(TTL)
        assert sorted(running(xend)) == ["guarded", "plain"]
        assert watchdog_status(xend.home.run_dir)["guarded"] == ["guarded"]
    finally:
        tear_down([xend])


def test_an_ha_create_its_watchdog_cannot_be_told_of_is_refused_and_claims_nothing(
        cluster: EtcdCluster) -> None:
    [xend] = start_members(cluster, 1)
    try:
        run_dir = xend.home.run_dir
        # Its socket's place taken by a file: the watchdog unreachable, none can start.
        blocker = run_dir / "blocker"
        blocker.write_text("not a socket\n")
        os.replace(blocker, run_dir / "fence.sock")
        xend.home.kill_fence()
        refused = xend.post("/xend/domain/", op="create", config=sxp.show(ha_vm("unguarded")))
        assert "fencing watchdog" in xend.error(refused, 503)
        assert claim(cluster, "unguarded") is None and running(xend) == []
        xend.create(sim_vm("plain"), unpause=True)  # a plain domain needs no watchdog
        # Once one can start, the next HA create starts it, and is guarded.
        (run_dir / "fence.sock").unlink()
        xend.create(ha_vm("guarded"), unpause=True)
        assert guarded(run_dir) == ["guarded"]
        assert sorted(running(xend)) == ["guarded", "plain"]
    finally:
        tear_down([xend])
