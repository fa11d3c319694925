"""A domain's life inside xend, asked of its actors in-process on the simulated host.

The DomainTable, the Domain actors and the Hypervisor actor run as in xend; the
simulated host runs in a thread (``tests/actors/xend.py``). Events are read from the
EventBus as they come.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.actors.xend import Gate, InProcessXend, xend_in_process
from tests.support.processes import wait_for
from xend_actors import sxp
from xend_actors.actors import ask
from xend_actors.device.config import VifConfig
from xend_actors.domain.config import parse_domain_config
from xend_actors.domain.record import RestartState, store_sxpr
from xend_actors.errors import Conflict, NotFound, XendError
from xend_actors.hypervisor.base import ShutdownReason
from xend_actors.hypervisor.sim.driver import SimDriver
from xend_actors.store import Store


@pytest.fixture
def xend() -> Iterator[InProcessXend]:
    with xend_in_process() as started:
        yield started


def running(xend: InProcessXend, name: str, *extra: sxp.Value) -> int:
    domid = xend.create(name, *extra).domid
    ask(xend.domain(name).unpause())
    return domid


def console_port(xend: InProcessXend, name: str) -> int:
    console = xend.info(name).console
    assert console is not None, f"{name} has no console"
    return console.port


def test_a_new_domain_is_paused_until_unpaused(xend: InProcessXend) -> None:
    info = xend.create("a1")
    assert info.paused and info.name == "a1" and info.config is not None
    ask(xend.domain("a1").unpause())
    assert not xend.info("a1").paused
    assert xend.info(str(info.domid)).name == "a1"  # by id too


def test_destroy_removes_the_domain_its_record_and_says_so_in_order(
        xend: InProcessXend) -> None:
    domid = running(xend, "d1")
    record = xend.config.dbroot / "domain" / str(domid)
    assert record.exists()
    ask(xend.domain("d1").destroy(ShutdownReason.HALT))
    # Destroyed, forgotten and its record gone before destroy answers.
    assert "d1" not in xend.names()
    assert not record.exists()
    with pytest.raises(NotFound):
        xend.info("d1")
    died = xend.wait_event("xend.domain.died", ["d1", str(domid)])
    destroy = xend.wait_event("xend.domain.destroy", ["d1", str(domid)])
    assert destroy.seq < died.seq


def test_a_name_is_taken_once_and_domain_0_is_not_a_guest(xend: InProcessXend) -> None:
    xend.create("twice")
    with pytest.raises(Conflict, match="vm name clash: twice"):
        xend.create("twice")
    with pytest.raises(Conflict, match="Domain-0 is the host"):
        ask(xend.table.find("Domain-0", guest_only=True))


def test_a_guest_poweroff_is_reaped_without_a_restart(xend: InProcessXend) -> None:
    domid = running(xend, "off")
    xend.type_on_console(domid, "poweroff")
    xend.wait_event("xend.domain.exit", ["off", str(domid), "poweroff"])
    xend.wait_event("xend.domain.died", ["off", str(domid)])
    assert "off" not in xend.names()
    assert xend.events_named("xend.domain.restart") == []


def test_a_guest_reboot_restarts_it_keeping_name_id_and_start_time(
        xend: InProcessXend) -> None:
    domid = running(xend, "rb")
    started = xend.info("rb").record.start_time
    xend.type_on_console(domid, "reboot")
    xend.wait_event("xend.domain.restart", ["rb", str(domid), "success"])
    info = xend.info("rb")
    assert (info.domid, info.record.start_time, info.record.restart_state) == \
        (domid, started, None)
    assert not info.paused  # a restarted domain runs
    assert [value[2] for value in xend.events_named("xend.domain.restart")] == \
        ["schedule", "begin", "success"]
    assert xend.events_named("xend.domain.died") == []


@pytest.mark.parametrize(("mode", "typed", "restarts"), [
    ("onreboot", "crash", False),
    ("always", "crash", True),
    ("always", "poweroff", True),
    ("never", "reboot", False),
])
def test_the_restart_mode_decides(xend: InProcessXend, mode: str, typed: str,
                                  restarts: bool) -> None:
    domid = running(xend, "m", ["restart", mode])
    xend.type_on_console(domid, typed)
    if restarts:
        xend.wait_event("xend.domain.restart", ["m", str(domid), "success"])
        assert "m" in xend.names()
    else:
        xend.wait_event("xend.domain.died", ["m", str(domid)])
        assert "m" not in xend.names()


def test_reboot_asked_of_xend_restarts_even_under_never_and_halt_cancels(
        xend: InProcessXend) -> None:
    domid = running(xend, "nv", ["restart", "never"])
    ask(xend.domain("nv").shutdown(ShutdownReason.REBOOT))
    xend.wait_event("xend.domain.restart", ["nv", str(domid), "success"])
    al = running(xend, "al", ["restart", "always"])
    ask(xend.domain("al").shutdown(ShutdownReason.HALT))
    xend.wait_event("xend.domain.died", ["al", str(al)])
    assert ["al", str(al), "begin"] not in xend.events_named("xend.domain.restart")


def test_destroy_with_reboot_restarts(xend: InProcessXend) -> None:
    domid = running(xend, "dr", ["restart", "never"])
    ask(xend.domain("dr").destroy(ShutdownReason.REBOOT))
    xend.wait_event("xend.domain.restart", ["dr", str(domid), "success"])
    assert xend.info("dr").domid == domid


def test_a_domain_whose_destroy_was_cut_off_cannot_be_rebooted_back(
        xend: InProcessXend, monkeypatch: pytest.MonkeyPatch) -> None:
    domid = running(xend, "cut", ["restart", "always"])

    def lost(self: SimDriver, domid: int) -> None:
        raise XendError("lost the connection to xend-simhv")

    monkeypatch.setattr(SimDriver, "destroy", lost)
    with pytest.raises(XendError, match="lost the connection"):
        ask(xend.domain("cut").destroy(ShutdownReason.HALT))
    with pytest.raises(Conflict, match="domain cut is being destroyed"):
        ask(xend.domain("cut").shutdown(ShutdownReason.REBOOT))
    with pytest.raises(Conflict, match="domain cut is being destroyed"):
        ask(xend.domain("cut").destroy(ShutdownReason.REBOOT))
    monkeypatch.undo()
    ask(xend.domain("cut").destroy(ShutdownReason.HALT))  # a retry finishes it
    xend.wait_event("xend.domain.died", ["cut", str(domid)])
    assert ["cut", str(domid), "schedule"] not in xend.events_named("xend.domain.restart")


def test_a_request_queued_behind_a_failed_restart_does_not_write_its_record_back(
        xend: InProcessXend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by bench/torture.py: a hot-plug queued behind a restart that failed wrote the
    # abandoned domain's record back; the next xend rebuilt it beside a new domain made
    # under its name meanwhile, two domains of one name.
    domid = running(xend, "rf", ["restart", "always"])
    gate, create = Gate(), SimDriver.create

    def lost_on_restart(self: SimDriver, name: str, memory_mb: int, **kwargs: Any) -> int:
        if kwargs.get("domid") is not None:  # the restart's
            gate.hold()
            raise XendError("lost the connection to xend-simhv")
        return create(self, name, memory_mb, **kwargs)

    monkeypatch.setattr(SimDriver, "create", lost_on_restart)
    domain = xend.domain("rf")
    ask(domain.shutdown(ShutdownReason.REBOOT))
    assert gate.entered.wait(10)
    queued = domain.device_create(VifConfig("aa:00:00:00:99:01"))
    gate.go.set()
    xend.wait_event("xend.domain.restart", ["rf", str(domid), "fail"])
    with pytest.raises(NotFound, match="domain rf is gone"):
        queued.get(timeout=10)
    assert not (xend.root / "db" / "domain" / str(domid)).exists()
    running(xend, "rf")  # the name is free


def test_a_domain_to_restart_gives_way_to_one_made_under_its_name_meanwhile(
        xend: InProcessXend) -> None:
    # As a killed xend can leave the store: a record of a domain to restart, gone from the
    # hypervisor, beside a live domain of the same name made after it.
    live = running(xend, "dup")
    record = xend.info("dup").record
    xend.stop()
    stale = live + 100
    Store(xend.config.dbroot).domain.write(str(stale), store_sxpr(
        replace(record, domid=stale, restart_state=RestartState.PENDING), 0.0))
    xend.start()
    assert xend.names().count("dup") == 1
    assert xend.info("dup").domid == live
    xend.wait_event("xend.domain.died", ["dup", str(stale)])
    assert not (xend.config.dbroot / "domain" / str(stale)).exists()


def test_a_crash_loop_meets_the_minimum_restart_time() -> None:
    with xend_in_process("(minimum-restart-time 60)") as xend:
        domid = running(xend, "loop", ["restart", "always"])
        xend.type_on_console(domid, "crash")
        xend.wait_event("xend.domain.restart", ["loop", str(domid), "success"])
        xend.type_on_console(domid, "crash")  # again, at once
        xend.wait_event("xend.domain.restart", ["loop", str(domid), "fail"])
        xend.wait_event("xend.domain.died", ["loop", str(domid)])
        assert "loop" not in xend.names()


def test_a_suspended_domain_is_left_alone(xend: InProcessXend) -> None:
    domid = running(xend, "sus")
    ask(xend.domain("sus").shutdown(ShutdownReason.SUSPEND))
    xend.wait_event("xend.domain.suspended", ["sus", str(domid)])
    ask(xend.table.refresh())
    assert "sus" in xend.names()
    assert xend.hv_state(domid) == "---s-"
    assert xend.events_named("xend.domain.suspended") == [["sus", str(domid)]]
    assert xend.events_named("xend.domain.destroy") == []


def test_a_domain_xend_does_not_know_is_adopted_and_can_be_configured(
        xend: InProcessXend) -> None:
    domid = xend.host.call(lambda: xend.host.hv.create("stranger", 16))
    name = "stranger"  # the name its hypervisor domain carries
    ask(xend.table.refresh())  # what a listing does (the original refreshed on each)
    xend.wait_event("xend.domain.create", [name, str(domid)])
    assert name in xend.names() and xend.info(name).config is None
    config = parse_domain_config(["vm", ["name", "known"], ["memory", "16"],
                                  ["image", ["linux", ["kernel", "/boot/vmlinuz-sim"]]]])
    ask(xend.domain(name).configure(config))
    assert xend.info("known").domid == domid  # found by its new name
    with pytest.raises(NotFound):
        xend.info(name)


def test_a_domain_destroyed_behind_xends_back_is_forgotten(xend: InProcessXend) -> None:
    domid = running(xend, "gone")
    xend.host.call(lambda: xend.host.hv.destroy(domid))
    xend.wait_event("xend.domain.died", ["gone", str(domid)])
    wait_for(lambda: "gone" not in xend.names(), what="the domain forgotten")
    assert not (xend.config.dbroot / "domain" / str(domid)).exists()


def test_xend_stopped_and_started_again_finds_every_domain_as_it_was(
        xend: InProcessXend) -> None:
    web = running(xend, "web")
    idle = xend.create("idle").domid
    rb = running(xend, "rb")
    ports = {name: console_port(xend, name) for name in ("web", "idle", "rb")}
    xend.stop()
    xend.type_on_console(rb, "reboot")  # while xend is down: restarted when it is back
    wait_for(lambda: xend.hv_state(rb) == "---s-", what="rb shut down")
    xend.start()
    assert {"web", "idle", "rb"} <= set(xend.names())
    assert (xend.info("web").domid, xend.info("idle").domid) == (web, idle)
    assert xend.info("idle").paused and not xend.info("web").paused
    xend.wait_event("xend.domain.restart", ["rb", str(rb), "success"])
    assert {name: console_port(xend, name) for name in ports} == ports
