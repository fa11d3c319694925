"""Transfer sessions under supervision and within their request's deadline, in-process:
a session (or a migration in) a bug ends answers at once (503) and the Transfer actor
puts back what it left as a restarted xend would; a step that runs out of the
request's time fails inside it and says where the domain was left, as does a
controller's hung script; a save or a create that outlives its request (504) goes on to
its end, visible in the events, and a retry of it is refused, not run twice.

Faults are injected by patching a function or the sim driver for one test; the web's
domain handlers are called as a request would.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from werkzeug.test import EnvironBuilder

from tests.actors.test_supervision import running
from tests.actors.xend import HELD, KERNEL, Gate, InProcessXend, _only, xend_in_process
from tests.support.ports import free_port_base
from tests.support.processes import wait_for
from xend_actors.actors import ask, proxy_of
from xend_actors.errors import XendError
from xend_actors.hypervisor.base import ShutdownReason
from xend_actors.hypervisor.sim.driver import SimDriver
from xend_actors.transfer import relocation, restoring, rollback, savefile, xfr
from xend_actors.transfer.transfer import Transfer, TransferProxy
from xend_actors.web.domain import DomainDirResource, DomainResource
from xend_actors.web.services import Services

FAULT = "injected fault"


@pytest.fixture
def xend() -> Iterator[InProcessXend]:
    with xend_in_process("(transfer-timeout 2)\n") as started:
        yield started


def services(xend: InProcessXend) -> Services:
    return Services(xend.config, xend.events, hypervisor=cast(Any, None), table=xend.table,
                    notifier=cast(Any, None), consoles=cast(Any, None),
                    vnets=cast(Any, None), view=xend.view,
                    transfer=proxy_of(_only(Transfer), TransferProxy))


def web_save(xend: InProcessXend, dom: str, file: Path) -> Any:
    request = EnvironBuilder(path=f"/xend/domain/{dom}", method="POST").get_request()
    return DomainResource(services(xend)).save(request, dom, str(file))


def web_restore(xend: InProcessXend, file: Path) -> Any:
    request = EnvironBuilder(path="/xend/domain/", method="POST").get_request()
    return DomainDirResource(services(xend)).restore(request, str(file))


def sessions_left(xend: InProcessXend) -> list[str]:
    folder = xend.config.dbroot / "migrate"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def put_back(xend: InProcessXend) -> None:
    """Returns once the Transfer actor put back what a failed session left: its records
    are gone, and it answers after it freed the names (it handles one thing at a time)."""
    wait_for(lambda: sessions_left(xend) == [], 10, "the session record to go")
    ask(proxy_of(_only(Transfer), TransferProxy).ping())


def bug(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(FAULT)


def test_a_save_a_bug_ends_answers_at_once_and_its_domain_runs_on(
        xend: InProcessXend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    domid = running(xend, "sv1")
    # The bug strikes with the guest suspended, and the session's own undo is as broken
    # as its state: only its supervisor can put the domain back.
    monkeypatch.setattr(savefile, "write", bug)
    monkeypatch.setattr(rollback.Suspension, "undo", bug)
    started = time.monotonic()
    with pytest.raises(XendError) as failed:
        web_save(xend, "sv1", tmp_path / "sv1.save")
    assert time.monotonic() - started < 1.5  # at once, not at the request's 2 s
    assert failed.value.status == 503
    assert failed.value.message == (
        f"the save of domain sv1 failed (RuntimeError: {FAULT}) and what it left was put "
        "back; try again")
    monkeypatch.undo()
    # Put back as a restarted xend would: the guest runs, no session is left, the name
    # is free for the next save, which works.
    wait_for(lambda: xend.hv_state(domid) in ("r----", "-b---"), 10, "sv1 to run again")
    put_back(xend)
    assert web_save(xend, "sv1", tmp_path / "sv1.save") == "0"
    assert "sv1" not in xend.names()
    assert (tmp_path / "sv1.save").stat().st_size > 0


def test_a_restore_a_bug_ends_leaves_no_domain_and_frees_the_name(
        xend: InProcessXend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running(xend, "rs1")
    saved = tmp_path / "rs1.save"
    assert web_save(xend, "rs1", saved) == "0"
    monkeypatch.setattr(restoring, "bring_up", bug)  # made by the driver, never brought up
    with pytest.raises(XendError) as failed:
        web_restore(xend, saved)
    assert failed.value.status == 503
    assert "the restore from" in failed.value.message
    monkeypatch.undo()
    # The half-restored domain is destroyed (none named rs1 is left in the hypervisor,
    # nor adopted nameless), its record deleted, its name free again.
    put_back(xend)
    wait_for(lambda: "rs1" not in xend.host.call(
        lambda: [d.name for d in xend.host.hv.list_domains()]), 10,
        "the half-restored domain to go")
    assert "rs1" not in xend.names()
    reply = web_restore(xend, saved)
    assert reply.status == 201
    assert xend.info("rs1").domid > 0


def test_a_save_step_past_the_requests_time_fails_inside_it_and_says_where(
        xend: InProcessXend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    domid = running(xend, "sl1")
    shutdown = SimDriver.shutdown

    def deaf(self: SimDriver, d: int, reason: ShutdownReason, key: str = "") -> None:
        if reason is not ShutdownReason.SUSPEND:  # a guest that never suspends
            shutdown(self, d, reason, key)

    monkeypatch.setattr(SimDriver, "shutdown", deaf)
    started = time.monotonic()
    with pytest.raises(XendError) as failed:
        web_save(xend, "sl1", tmp_path / "sl1.save")
    took = time.monotonic() - started
    # The wait for the suspend ended inside the request's 2 s (it used to wait 30 s
    # while the request gave up blind), the save was undone, and the 504 says so.
    assert failed.value.status == 504
    assert failed.value.message.startswith(f"save failed: domain {domid} did not suspend "
                                           "within ")
    assert failed.value.message.endswith(f"; domain {domid} is running")
    assert took < 2.0, f"the 504 came after {took:.1f} s"
    assert sessions_left(xend) == []
    assert not (tmp_path / "sl1.save").exists()
    assert "sl1" in xend.names()


def test_a_save_that_outlives_its_request_goes_on_and_is_not_run_twice(
        xend: InProcessXend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    domid = running(xend, "ln1")
    gate = Gate()
    save_state = SimDriver.save_state
    monkeypatch.setattr(SimDriver, "save_state",
                        lambda self, d: (gate.hold(), save_state(self, d))[1])
    file = tmp_path / "ln1.save"
    try:
        with pytest.raises(XendError) as timeout:
            web_save(xend, "ln1", file)
        assert timeout.value.status == 504
        assert timeout.value.message == (
            "save of ln1 did not finish in 2 s; the save goes on; watch "
            "xend.domain.save.progress and xend.domain.died")
        assert gate.entered.is_set()
        # The client retries: refused, not a second save of the same domain.
        with pytest.raises(XendError) as again:
            web_save(xend, "ln1", file)
        assert again.value.status == 409
        assert again.value.message == "domain ln1 is already being saved"
    finally:
        gate.go.set()
    # The first save ends after its request did, and the events say so.
    done = xend.wait_event("xend.domain.save", timeout=HELD)
    wait_for(lambda: any(v[:3] == ["ln1", str(domid), "ok"]
                         for v in xend.events_named("xend.domain.save")), 10,
             "the save to end")
    assert done.value[0] == "ln1"
    progress = xend.events_named("xend.domain.save.progress")
    assert [v[:2] for v in progress] == [["ln1", str(domid)]]
    xend.wait_event("xend.domain.died", ["ln1", str(domid)])
    assert file.stat().st_size > 0
    assert sessions_left(xend) == []


def test_a_hung_vif_script_ends_inside_the_hot_plugs_deadline(tmp_path: Path) -> None:
    slow = tmp_path / "slow-vif"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    with xend_in_process("(build-timeout 2)\n") as xend:
        running(xend, "hp1")
        request = EnvironBuilder(path="/xend/domain/hp1", method="POST").get_request()
        started = time.monotonic()
        with pytest.raises(XendError) as timeout:
            DomainResource(services(xend)).device_create(
                request, "hp1", ["vif", ["script", str(slow)]])
        took = time.monotonic() - started
        # The controller's own wait for its script ended first (it used to wait 60 s
        # while the request gave up at 2 s), it undid the vif, and the 504 says which.
        assert timeout.value.status == 504
        assert f"script {slow} did not finish in" in timeout.value.message
        assert took < 2.0, f"the 504 came after {took:.1f} s"
        assert ask(xend.table.devices("hp1")) == ()
        assert xend.domain("hp1") is not None


def test_a_hung_block_script_ends_inside_the_hot_plugs_deadline(tmp_path: Path) -> None:
    slow = tmp_path / "block-slow"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    with xend_in_process(f"(build-timeout 2)\n(block-slow {slow})\n") as xend:
        running(xend, "hp2")
        request = EnvironBuilder(path="/xend/domain/hp2", method="POST").get_request()
        started = time.monotonic()
        with pytest.raises(XendError) as timeout:
            DomainResource(services(xend)).device_create(
                request, "hp2", ["vbd", ["uname", "slow:vol1"], ["dev", "sda1"], ["mode", "w"]])
        took = time.monotonic() - started
        assert timeout.value.status == 504  # it used to wait the script's own 60 s
        assert f"block script {slow} bind: script {slow} did not finish in" in \
            timeout.value.message
        assert took < 2.0, f"the 504 came after {took:.1f} s"
        assert ask(xend.table.devices("hp2")) == ()


def test_a_slow_create_reports_progress_and_its_retry_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    build = SimDriver.build
    monkeypatch.setattr(SimDriver, "build",
                        lambda self, d, image: (gate.hold(), build(self, d, image))[1])
    config = ["vm", ["name", "cr1"], ["memory", "32"], ["image", ["linux", ["kernel", KERNEL]]],
              ["device", ["vif"]]]
    with xend_in_process("(build-timeout 2)\n") as xend:
        create = DomainDirResource(services(xend)).create
        request = EnvironBuilder(path="/xend/domain/", method="POST").get_request()
        try:
            with pytest.raises(XendError) as timeout:
                create(request, config)
            assert timeout.value.status == 504
            assert timeout.value.message.startswith("create of cr1 did not finish in 2 s; "
                                                    "it is still being built")
            # A retry is refused: the name is the first create's, not a second domain.
            with pytest.raises(XendError) as again:
                create(request, config)
            assert again.value.status == 409
        finally:
            gate.go.set()
        # The first create ends after its request did; its steps came as events.
        created = wait_for(lambda: [v for v in xend.events_named("xend.domain.create")
                                    if v[0] == "cr1"], HELD, "the create to end")
        domid = cast(list[Any], created)[0][1]
        phases = [v[2] for v in xend.events_named("xend.domain.create.progress")]
        assert phases == [["progress", ["phase", p]] for p in ("loaded", "devices", "console")]
        assert [v[:2] for v in xend.events_named("xend.domain.create.progress")] == [
            ["cr1", domid]] * 3
        assert xend.names().count("cr1") == 1


def offer(port: int, name: str) -> xfr.Channel:
    """A source that offers domain ``name`` (32 MiB) at the relocation port; the channel
    once the destination said yes to the offer (else XfrError saying why)."""
    channel = xfr.Channel(socket.create_connection(("127.0.0.1", port), timeout=10),
                          "the destination", 10)
    channel.send(xfr.Hello())
    channel.expect_ok("the hello")
    vm = ["vm", ["name", name], ["memory", "32"], ["image", ["linux", ["kernel", KERNEL]]]]
    channel.send(xfr.Xfr(7, ["domain", ["name", name], ["config", vm]], 32 << 20, False))
    channel.expect_ok("the offer")
    return channel


def test_a_migration_in_a_bug_ends_leaves_no_domain_and_frees_the_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port_base()
    # The pages are taken as read and the domain made from them at once; then the bug.
    monkeypatch.setattr(relocation, "_receive_memory", lambda channel, offer: b"")
    monkeypatch.setattr(SimDriver, "restore_state",
                        lambda self, name, memory_mb, state: self.create(name, memory_mb))
    monkeypatch.setattr(relocation, "bring_up", bug)
    with xend_in_process(f"(xend-relocation-server yes)\n(xend-relocation-tls no)\n"
                         f"(xend-relocation-address 127.0.0.1)\n"
                         f"(xend-relocation-port {port})\n") as xend:
        # The destination gives up on the connection: it closes it.
        with contextlib.closing(offer(port, "mi1")) as channel, pytest.raises(XendError):
            channel.receive()
        # The half-made domain is destroyed, the session's record deleted ...
        wait_for(lambda: "mi1" not in xend.host.call(
            lambda: [d.name for d in xend.host.hv.list_domains()]), 10,
            "the half-migrated domain to go")
        put_back(xend)
        assert "mi1" not in xend.names()
        # ... and the name is free: the next offer of it is taken.
        monkeypatch.undo()
        offer(port, "mi1").close()
