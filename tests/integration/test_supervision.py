"""A dying hypervisor helper is a crash of its domains, never a hang: xend-simhv killed
with SIGKILL under a running xend, while requests run."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from tests.support.processes import wait_for
from tests.support.xend import Xend, sim_vm
from xend_actors import sxp

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
