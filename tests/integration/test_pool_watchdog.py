"""A pool member's fencing watchdog with a real pool xend and etcd on loopback: a xend
killed with ``kill -9`` leaves its HA domain running, and its watchdog destroys it while
the member's lease still lives (so before any other member may restart it)."""

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
    events_named,
    ha_vm,
    running,
    start_members,
    tear_down,
)
from tests.support.processes import wait_for
from tests.support.xend import sim_vm
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
        # Its own fence, which found nothing left to destroy, and the watchdog's.
        assert [e.value for e in events_named(xend, "xend.pool.fenced")] == [
            ["h0", ["domains", "guarded"]],
            ["h0", ["domains", "guarded"], ["by", "watchdog"]]]
        time.sleep(TTL)
        assert sorted(running(xend)) == ["guarded", "plain"]
        assert watchdog_status(xend.home.run_dir)["guarded"] == ["guarded"]
    finally:
        tear_down([xend])
