"""A dying hypervisor helper is a crash of its domains, never a hang: xend-simhv killed
with SIGKILL under a running xend, while requests run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.processes import wait_for
from tests.support.xend import Xend, sim_vm
from xend_actors import sxp
from xend_actors.hypervisor.sim.driver import SimDriver

pytestmark = pytest.mark.integration


def test_a_killed_simhv_crashes_its_domains_per_their_restart_rules(
        fresh_xend: Callable[..., Xend]) -> None:
    xend = fresh_xend()
    keep = sxp.child_value(xend.create(sim_vm("keep", ["restart", "always"]), unpause=True),
                           "id")
    lose = sxp.child_value(xend.create(sim_vm("lose", ["restart", "never"]), unpause=True),
                           "id")
    xend.events.mark()
    # Requests in flight while the helper dies: each ends with an answer, none hangs.
    answers: list[int] = []
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            try:
                answers.append(xend.get("/xend/domain/lose").status_code)
            except httpx.TimeoutException:
                answers.append(0)

    workers = [threading.Thread(target=busy) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(answers) >= 6, what="requests to be running")
        xend.home.kill_simhv()
        xend.events.wait_line(f"xend.domain.exit (keep {keep} crash)")
        xend.events.wait_line(f"xend.domain.restart (keep {keep} success)")
        xend.events.wait_line(f"xend.domain.died (lose {lose})")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert answers and 0 not in answers, "a request hung"
    assert sorted(xend.names()) == ["Domain-0", "keep"]
    assert "p" not in xend.state("keep")  # rebuilt and running on the new helper
    # xend serves on: a new domain can be made and destroyed.
    xend.create(sim_vm("after"), unpause=True)
    xend.ok(xend.op("after", "destroy", reason="halt"))
    assert sorted(xend.names()) == ["Domain-0", "keep"]


def hypervisor_names(xend: Xend) -> dict[int, str]:
    """What the hypervisor itself holds: domain id → name."""
    driver = SimDriver(xend.home.simhv_socket)
    try:
        return {d.domid: d.name for d in driver.list_domains()}
    finally:
        driver.close()


def test_a_domain_whose_reboot_was_pending_when_simhv_died_is_restarted_not_left_listed(
        fresh_xend: Callable[..., Xend]) -> None:
    xend = fresh_xend()
    # Paused, the guest cannot act on the reboot asked of it: its restart stays pending.
    domid = int(sxp.child_value(xend.create(sim_vm("pending", ["restart", "never"]),
                                            unpause=True), "id"))
    xend.ok(xend.op("pending", "pause"))
    xend.events.mark()
    xend.ok(xend.op("pending", "shutdown", reason="reboot"), 202)
    xend.events.wait_line(f"xend.domain.restart (pending {domid} schedule)")
    xend.home.kill_simhv()
    # It crashed with the helper; the reboot asked of it restarts it on the new one (before,
    # it stayed in xend's list and the store, and in no hypervisor, until destroyed).
    xend.events.wait_line(f"xend.domain.exit (pending {domid} crash)")
    xend.events.wait_line(f"xend.domain.restart (pending {domid} success)")
    wait_for(lambda: hypervisor_names(xend).get(domid) == "pending",
             what="the domain rebuilt in the new hypervisor")
    assert sorted(xend.names()) == ["Domain-0", "pending"]
    assert xend.records() == ["0", str(domid)]
    assert "p" not in xend.state("pending")


def test_a_new_simhv_gives_no_crashed_domain_id_again(fresh_xend: Callable[..., Xend]) -> None:
    """Ids only grow, as Xen's: a domain made right after the helper died never gets the id
    of a crashed one whose end (its record, its console port, its devices) xend may still be
    handling."""
    xend = fresh_xend()
    ids = [int(sxp.child_value(xend.create(sim_vm(f"old{i}"), unpause=True), "id"))
           for i in range(2)]
    xend.events.mark()
    xend.home.kill_simhv()
    for i, domid in enumerate(ids):
        xend.events.wait_line(f"xend.domain.died (old{i} {domid})")
    new = int(sxp.child_value(xend.create(sim_vm("new"), unpause=True), "id"))
    assert new > max(ids)
    assert sorted(xend.names()) == ["Domain-0", "new"]
    assert hypervisor_names(xend) == {0: "Domain-0", new: "new"}


def test_a_save_of_a_domain_with_a_reboot_pending_is_409_and_the_domain_reboots(
        fresh_xend: Callable[..., Xend], tmp_path: Path) -> None:
    """The guest acts on the reboot asked before the save's suspend, and is rebuilt: it
    would never suspend (the save waited 30 s for it and answered 504). That is the
    domain's state, not a failure of the hypervisor: 409 at once, no file, and the
    domain reboots as asked."""
    xend = fresh_xend()
    domid = int(sxp.child_value(xend.create(sim_vm("busy", ["restart", "never"]),
                                            unpause=True), "id"))
    xend.ok(xend.op("busy", "pause"))
    xend.events.mark()
    xend.ok(xend.op("busy", "shutdown", reason="reboot"), 202)  # waits in the paused guest
    target = tmp_path / "busy.save"
    began = time.monotonic()
    message = xend.error(xend.op("busy", "save", file=str(target)), 409)
    assert time.monotonic() - began < 10
    assert message == "save failed: domain busy is rebooting: it cannot be suspended"
    assert not target.exists()
    xend.ok(xend.op("busy", "unpause"))
    xend.events.wait_line(f"xend.domain.restart (busy {domid} success)")
    assert sorted(xend.names()) == ["Domain-0", "busy"]
    assert hypervisor_names(xend).get(domid) == "busy"


def test_a_domain_that_ended_while_xend_was_away_is_reported_dead_when_it_starts(
        fresh_xend: Callable[..., Xend]) -> None:
    """Whoever follows the events learns that the domain is gone, as if xend had watched:
    its helper died (and the domain with it) while xend was stopped."""
    xend = fresh_xend()
    domid = sxp.child_value(xend.create(sim_vm("away"), unpause=True), "id")
    seen = xend.events.mark()
    xend.home.stop()
    xend.home.kill_simhv()
    xend.start()
    xend.events.wait_line(f"xend.domain.died (away {domid})", since=seen)
    assert xend.names() == ["Domain-0"]
    assert xend.records() == ["0"]
