"""A pool member whose actors Root restarts (one for all, after an actor died) keeps its
HA domains (and its lease): only xend's stop fences them, keeping their claims for the
member that restarts them, and leaves the pool. In-process, on a real etcd
(one member on loopback) and the real fencing watchdog the member starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any, cast

import pykka
import pytest

from tests.actors.xend import InProcessXend, xend_in_process
from tests.support.etcd import EtcdCluster
from tests.support.processes import wait_for, wait_gone
from xend_actors.actors import ask, proxy_of
from xend_actors.debug.server import DebugServer
from xend_actors.domain.table import DomainTable, DomainTableProxy

POOL = "restart"


@pytest.fixture
def member() -> Iterator[tuple[InProcessXend, EtcdCluster]]:
    cluster = EtcdCluster(1)
    try:
        with xend_in_process(f"(xend-pool {POOL})\n(xend-pool-etcd '{cluster.urls}')\n"
                             "(xend-pool-host m1)\n(xend-pool-ttl 4)\n") as xend:
            try:
                wait_for(lambda: cluster.get(f"/xend-pool/{POOL}/hosts/m1"), 10, "the join")
                yield xend, cluster
            finally:
                with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                    pid = int((xend.config.run_dir / "fence.pid").read_text())
                    os.kill(pid, signal.SIGKILL)
                    wait_gone(pid, 10)
    finally:
        cluster.close()


def test_a_restart_of_xends_actors_keeps_its_ha_domains_and_a_stop_fences_them(
        member: tuple[InProcessXend, EtcdCluster]) -> None:
    xend, cluster = member
    domid = xend.create("guarded", ["ha", "yes"]).domid
    ask(xend.domain("guarded").unpause())
    old = xend.table.actor_ref
    xend.table.find.defer("nowhere")  # a told message that raises: pykka stops the table
    wait_for(lambda: not old.is_alive(), 10, "the table to die")
    old_debug = pykka.ActorRegistry.get_by_class(DebugServer)
    wait_for(lambda: [r for r in pykka.ActorRegistry.get_by_class(DebugServer)
                      if r not in old_debug], 15, "xend started again")
    [ref] = pykka.ActorRegistry.get_by_class(DomainTable)
    xend.table = proxy_of(cast(pykka.ActorRef[Any], ref), DomainTableProxy)

    assert xend.info("guarded").domid == domid
    assert "p" not in xend.hv_state(domid)
    assert xend.events_named("xend.pool.fenced") == []
    assert cluster.get(f"/xend-pool/{POOL}/names/guarded") == b"m1"

    xend.stop()  # xend's stop: the member fences its HA domain and leaves the pool
    assert not xend.host.call(lambda: xend.host.hv.has_domain_named("guarded"))
    assert cluster.get(f"/xend-pool/{POOL}/hosts/m1") is None
    assert cluster.get(f"/xend-pool/{POOL}/names/guarded") == b"m1"  # for another member
