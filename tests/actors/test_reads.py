"""Reads without hand-offs: a domain's info, the list and every info are answered from
the table's snapshot, asking no actor, and the snapshot is exact after each change.

A whole xend runs in-process (``tests/actors/xend.py``) with its Unix socket on; the
tests read it over HTTP with ``XendClient`` and ``xm``, as a user does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.actors.xend import KERNEL, Gate, InProcessXend, xend_in_process
from tests.support.processes import wait_for
from xend_actors import sxp
from xend_actors.actors import ask
from xend_actors.client import XendClient
from xend_actors.domain.table import DomainTable
from xend_actors.errors import NotFound, XendError
from xend_actors.hypervisor.base import LinuxImage, ShutdownReason
from xend_actors.hypervisor.sim.driver import SimDriver

QUICK = 5.0  # a read must answer well within this while the table is held


@pytest.fixture
def xend() -> Iterator[InProcessXend]:
    with xend_in_process("(xend-unix-server yes)\n") as started:
        yield started


@pytest.fixture
def client(xend: InProcessXend) -> Iterator[XendClient]:
    with XendClient(unix_path=xend.config.unix_path) as started:
        yield started


def vm(name: str, *extra: sxp.Value) -> sxp.Value:
    return ["vm", ["name", name], ["memory", "32"], ["image", ["linux", ["kernel", KERNEL]]],
            *extra]


def state(client: XendClient, dom: str) -> str:
    return str(sxp.child_value(client.xend_domain(dom), "state"))


def absent(client: XendClient, dom: str) -> bool:
    try:
        client.xend_domain(dom)
    except XendError as error:
        assert error.status == 404, error
        return True
    return False


def without_moving(info: sxp.Value) -> sxp.Value:
    """``info`` without the values that move by themselves between two reads."""
    assert isinstance(info, list)
    return [item for item in info if sxp.name(item) not in ("up_time", "cpu_time")]


def test_reads_answer_while_the_table_is_held_busy(
        xend: InProcessXend, client: XendClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A create whose name check hangs in the hypervisor holds the table (and the
    Hypervisor actor); one info, the list, every info and ``xm list`` answer anyway."""
    client.xend_domain_create(vm("r1"))
    client.xend_domain_unpause("r1")
    gate = Gate()
    named = SimDriver.has_domain_named
    monkeypatch.setattr(SimDriver, "has_domain_named",
                        lambda self, name: (gate.hold(), named(self, name))[1])
    creating = threading.Thread(target=lambda: _create_quietly(xend, "r2"), daemon=True)
    creating.start()
    try:
        assert gate.entered.wait(10), "the create never reached the hypervisor"
        started = time.monotonic()
        assert sxp.child_value(client.xend_domain("r1"), "name") == "r1"
        assert "r1" in client.xend_domains()
        detail = client.xend_domains(detail=True)
        assert {sxp.child_value(info, "name") for info in detail} == {"Domain-0", "r1"}
        listed = subprocess.run(
            [str(Path(sys.executable).with_name("xm")), "list"], capture_output=True,
            text=True, timeout=QUICK, env={**os.environ, "XEND_UNIX_PATH":
                                           str(xend.config.unix_path)}, check=True)
        assert "r1" in listed.stdout, listed.stdout
        took = time.monotonic() - started
        assert took < QUICK, f"the reads took {took:.1f} s while the table was held"
        assert creating.is_alive(), "the table was not held while the reads ran"
    finally:
        gate.go.set()
        creating.join(timeout=30)
    assert "r2" in client.xend_domains()  # the held create went on


def _create_quietly(xend: InProcessXend, name: str) -> None:
    with XendClient(unix_path=xend.config.unix_path) as other:
        other.xend_domain_create(vm(name))


def test_the_next_read_shows_each_change(xend: InProcessXend, client: XendClient,
                                          tmp_path: Path) -> None:
    created = client.xend_domain_create(vm("c1"))
    assert "c1" in client.xend_domains()  # listed at once
    assert state(client, "c1") == "--p--"
    assert without_moving(client.xend_domain("c1")) == without_moving(created)
    client.xend_domain_unpause("c1")
    assert "p" not in state(client, "c1")
    client.xend_domain_pause("c1")
    assert state(client, "c1") == "--p--"
    client.xend_domain_unpause("c1")
    client.xend_domain_mem_target_set("c1", 16)
    assert sxp.child_value(client.xend_domain("c1"), "memory") == "16"
    client.xend_domain_destroy("c1", "halt")
    assert absent(client, "c1") and "c1" not in client.xend_domains()
    # One made behind xend's back is adopted, and its create event is out only once it
    # is listed; configured with a name, it is found by that name at once.
    domid = str(xend.host.call(lambda: xend.host.hv.create("stranger", 32)))
    xend.wait_event("xend.domain.create", ["stranger", domid])
    assert sxp.child_value(client.xend_domain(domid), "name") == "stranger"
    client.xend_domain_configure(domid, vm("c1b"))
    assert sxp.child_value(client.xend_domain(domid), "name") == "c1b"
    assert absent(client, "stranger") and "c1b" in client.xend_domains()
    xend.host.call(lambda: xend.host.hv.build(int(domid), LinuxImage(KERNEL)))
    client.xend_domain_unpause("c1b")
    # Saved: gone at once; restored: listed at once under the name in its image, with
    # a new id (the old one not found).
    saved = tmp_path / "c1b.save"
    client.xend_domain_save("c1b", str(saved))
    assert absent(client, "c1b") and "c1b" not in client.xend_domains()
    restored = client.xend_domain_restore(str(saved))
    assert "c1b" in client.xend_domains()
    assert without_moving(client.xend_domain("c1b")) == without_moving(restored)
    assert sxp.child_value(restored, "id") != domid and absent(client, domid)
    client.xend_domain_destroy("c1b", "halt")
    assert absent(client, "c1b") and "c1b" not in client.xend_domains()
    # Shut down from inside: once its died event is out, it is not found.
    client.xend_domain_create(vm("s1"))
    client.xend_domain_unpause("s1")
    domid = sxp.child_value(client.xend_domain("s1"), "id")
    client.xend_domain_shutdown("s1", "poweroff")
    xend.wait_event("xend.domain.died", ["s1", domid])
    assert absent(client, "s1")


def test_an_event_is_out_only_once_a_read_shows_it(
        xend: InProcessXend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever hears a pause, unpause or died and then reads finds the domain as the
    event says, with no wait, even from a slow table: the table publishes first."""
    publish = DomainTable._publish

    def slowly(table: DomainTable) -> None:
        time.sleep(0.005)
        publish(table)

    monkeypatch.setattr(DomainTable, "_publish", slowly)
    view = xend.view
    for round in range(10):
        name = f"e{round}"
        domid = xend.create(name).domid
        ids = [name, str(domid)]
        domain = xend.domain(name)
        for op, paused in (("unpause", False), ("pause", True), ("unpause", False)):
            getattr(domain, op)()  # not waited for: only the event says it is done
            xend.wait_event(f"xend.domain.{op}", ids)
            assert view.info(name)[0].paused is paused, f"{op} of {name}"
            xend.seen.clear()
        domain.destroy(ShutdownReason.HALT)
        xend.wait_event("xend.domain.died", ids)
        with pytest.raises(NotFound):
            view.info(name)


def test_the_shown_text_is_the_infos_sxp_and_is_made_again_on_change(
        xend: InProcessXend, client: XendClient) -> None:
    client.xend_domain_create(vm("t1", ["device", ["vif"]]))
    client.xend_domain_unpause("t1")
    snapshot = xend.view.current()
    listed = snapshot.find("t1")
    info, shown = xend.view.info("t1")
    assert shown == sxp.show(info.sxpr())
    assert without_moving(sxp.parse(shown)) == without_moving(client.xend_domain("t1"))
    # The list of every info is the same infos, in the table's order.
    infos, every = xend.view.infos()
    assert every == sxp.show([i.sxpr() for i in infos])
    assert [sxp.child_value(i, "name") for i in sxp.parse(every)] == \
        ask(xend.table.names())
    # A change: a new entry, whose text shows it.
    client.xend_domain_pause("t1")
    after = xend.view.current().find("t1")
    assert after is not listed
    info, shown = xend.view.info("t1")
    assert sxp.child_value(sxp.parse(shown), "state") == "--p--"
    assert shown == sxp.show(info.sxpr())


def test_cpu_time_and_up_time_move_while_read(xend: InProcessXend,
                                             client: XendClient) -> None:
    client.xend_domain_create(vm("m1"))
    client.xend_domain_unpause("m1")
    first = client.xend_domain("m1")

    def moved() -> bool:
        now = client.xend_domain("m1")
        return float(sxp.child_value(now, "cpu_time")) > \
            float(sxp.child_value(first, "cpu_time")) and \
            float(sxp.child_value(now, "up_time")) > float(sxp.child_value(first, "up_time"))

    wait_for(moved, timeout=5, what="cpu_time and up_time to move")
