"""Domain lifecycle on the simulated hypervisor, over HTTP, against a real xend + simhv."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import wait_for
from tests.support.xend import Xend
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.hypervisor.base import ShutdownReason
from xend_actors.hypervisor.sim.driver import SimDriver

pytestmark = pytest.mark.integration

KERNEL = "/boot/vmlinuz-sim"


def vm(name: str, memory: int = 32, *extra: sxp.Value) -> str:
    return sxp.show(["vm", ["name", name], ["memory", str(memory)],
                     ["image", ["linux", ["kernel", KERNEL], ["root", "/dev/sda1 ro"]]],
                     *extra])


@pytest.fixture
def sim_xend(fresh_xend: Callable[..., Xend]) -> Callable[..., Xend]:
    """A xend of the test's own (most tests share the module's ``xend``)."""
    return fresh_xend


def guest_types(xend: Xend, domid: str, line: str) -> None:
    """Type a line on the guest's own console, as a user at its shell would."""
    driver = SimDriver(xend.home.simhv_socket)
    try:
        console = driver.open_console(int(domid))
        with console:
            console.sendall(line.encode() + b"\n")
            wait_for(lambda: _drained(console), what="the guest to read the line")
    finally:
        driver.close()


def _drained(console: socket.socket) -> bool:
    console.settimeout(0.2)
    try:
        return bool(console.recv(65536))
    except TimeoutError:
        return False


# --- the lifecycle -----------------------------------------------------------------------


def test_domain_0_is_listed_from_the_start(sim_xend: Callable[..., Xend]) -> None:
    xend = sim_xend()
    assert xend.names() == ["Domain-0"]
    info = xend.info("Domain-0")
    assert sxp.child_value(info, "id") == "0"
    assert sxp.child(info, "config") is None


def test_create_replies_201_with_location_and_info(xend: Xend) -> None:
    reply = xend.post("/xend/domain/", op="create", config=vm("web1"))
    assert reply.status_code == 201
    assert reply.headers["location"].endswith("/xend/domain/web1")
    info = sxp.parse(reply.text)
    assert sxp.child_value(info, "name") == "web1"
    assert int(sxp.child_value(info, "id")) > 0
    assert sxp.child_value(info, "state") == "--p--"  # created paused
    config = sxp.child_value(info, "config")
    assert sxp.child_value(sxp.child_value(config, "image"), "kernel") == KERNEL
    assert sorted(xend.names()) == ["Domain-0", "web1"]
    xend.events.wait_line(f"xend.domain.create (web1 {sxp.child_value(info, 'id')})")


def test_a_name_with_a_slash_is_addressable(xend: Xend) -> None:
    """The original allowed ``/`` in names; the name is the rest of the URL path."""
    xend.create(vm("web/1"))
    assert sxp.child_value(xend.info("web/1"), "name") == "web/1"
    assert xend.op("web%2F1", "pause").status_code == 200
    assert "p" in xend.state("web/1")
    with XendClient(unix_path=xend.home.unix_path) as client:
        client.xend_domain_unpause("web/1")
    assert "p" not in xend.state("web/1")


def test_pause_unpause_change_state_and_cpu_time_only_runs_unpaused(xend: Xend) -> None:
    domid = sxp.child_value(xend.create(vm("p1")), "id")
    assert xend.op("p1", "unpause").status_code == 200
    wait_for(lambda: "p" not in xend.state("p1"), what="p1 running")
    assert xend.op(domid, "pause").status_code == 200
    assert xend.state("p1")[2] == "p"
    paused_time = float(sxp.child_value(xend.info("p1"), "cpu_time"))
    assert float(sxp.child_value(xend.info("p1"), "cpu_time")) == paused_time
    xend.events.wait_line(f"xend.domain.pause (p1 {domid})")
    xend.op("p1", "unpause")
    wait_for(lambda: float(sxp.child_value(xend.info("p1"), "cpu_time")) > paused_time,
             what="cpu time to advance")


def test_shutdown_poweroff_is_202_and_the_domain_is_reaped(xend: Xend) -> None:
    domid = sxp.child_value(xend.create(vm("s1")), "id")
    xend.op("s1", "unpause")
    reply = xend.op("s1", "shutdown", reason="poweroff")
    assert reply.status_code == 202
    wait_for(lambda: "s1" not in xend.names(), what="s1 to be reaped")
    xend.events.wait_line(f"xend.domain.died (s1 {domid})")
    domain_events = [event for event in xend.events.lines() if event.startswith("xend.domain.")]
    assert domain_events[-3:] == [f"xend.domain.exit (s1 {domid} poweroff)",
                                  f"xend.domain.destroy (s1 {domid})",
                                  f"xend.domain.died (s1 {domid})"]
    assert not (xend.home.dbroot / "domain" / domid).exists()


def test_destroy_removes_domain_and_record(xend: Xend) -> None:
    domid = sxp.child_value(xend.create(vm("d1")), "id")
    assert (xend.home.dbroot / "domain" / domid).exists()
    assert xend.op("d1", "destroy", reason="halt").status_code == 200
    assert "d1" not in xend.names()
    assert not (xend.home.dbroot / "domain" / domid).exists()
    xend.events.wait_line(f"xend.domain.destroy (d1 {domid})")


def test_suspended_domain_is_not_reaped(xend: Xend) -> None:
    domid = sxp.child_value(xend.create(vm("z1")), "id")
    xend.op("z1", "unpause")
    assert xend.op("z1", "shutdown", reason="suspend").status_code == 202
    xend.events.wait_line(f"xend.domain.suspended (z1 {domid})")
    info = xend.info("z1")
    assert sxp.child_value(info, "state")[3] == "s"
    assert sxp.child_value(info, "shutdown_reason") == "suspend"
    assert "z1" in xend.names()


def test_memory_and_scheduling_ops(xend: Xend) -> None:
    xend.create(vm("m1", 64))
    assert xend.op("m1", "maxmem_set", memory="128").status_code == 200
    assert sxp.child_value(xend.info("m1"), "maxmem") == "128"
    assert xend.op("m1", "mem_target_set", target="48").status_code == 200
    wait_for(lambda: sxp.child_value(xend.info("m1"), "memory") == "48", what="balloon")
    assert xend.op("m1", "pincpu", cpu="1").status_code == 200
    assert sxp.child_value(xend.info("m1"), "cpu") == "1"
    for op, fields in [
        ("cpu_bvt_set", dict(mcuadv="10", warpback="1", warpvalue="2", warpl="3", warpu="4")),
        ("bvt_set", dict(mcuadv="10", warpback="1", warpvalue="2", warpl="3", warpu="4")),
        ("fbvt_set", dict(mcuadv="10", warp="1", warpl="3", warpu="4")),
        ("cpu_atropos_set", dict(period="100", slice="10", latency="5", xtratime="1")),
        ("atropos_set", dict(period="100", slice="10", latency="5", xtratime="1")),
    ]:
        assert xend.op("m1", op, **fields).status_code == 200, op


# --- restart modes ---------------------------------------------------------------------------


def started(xend: Xend, name: str, restart: str | None = None) -> str:
    extra = [["restart", restart]] if restart else []
    domid = sxp.child_value(xend.create(vm(name, 32, *extra)), "id")
    xend.op(name, "unpause")
    wait_for(lambda: "p" not in xend.state(name), what=f"{name} unpaused")
    return domid


def restarted(xend: Xend, name: str, domid: str, since: int | None = None) -> int:
    """Wait for the domain's successful restart (after event ``since``); its event's number."""
    return xend.events.wait_line(f"xend.domain.restart ({name} {domid} success)",
                                 since=since).seq


def test_onreboot_restarts_a_rebooting_guest_keeping_name_id_and_start_time(xend: Xend) -> None:
    domid = started(xend, "r1")
    start_time = sxp.child_value(xend.info("r1"), "start_time")
    guest_types(xend, domid, "reboot")
    restarted(xend, "r1", domid)
    info = xend.info("r1")
    assert sxp.child_value(info, "id") == domid
    assert sxp.child_value(info, "start_time") == start_time
    assert sxp.child_value(info, "restart_time") is not None
    assert "p" not in sxp.child_value(info, "state")  # unpaused after the restart


def test_onreboot_does_not_restart_a_poweroff(xend: Xend) -> None:
    domid = started(xend, "r2")
    guest_types(xend, domid, "poweroff")
    wait_for(lambda: "r2" not in xend.names(), what="r2 gone")
    assert not any("xend.domain.restart (r2" in line for line in xend.events.lines())


def test_always_restarts_a_poweroff_and_a_crash(sim_xend: Callable[..., Xend]) -> None:
    xend = sim_xend("(minimum-restart-time 0)")
    domid = started(xend, "a1", "always")
    guest_types(xend, domid, "poweroff")
    first = restarted(xend, "a1", domid)
    wait_for(lambda: "p" not in xend.state("a1"), what="a1 running again")
    guest_types(xend, domid, "crash")
    xend.events.wait_line(f"xend.domain.exit (a1 {domid} crash)")
    restarted(xend, "a1", domid, since=first)
    assert xend.events.count(f"xend.domain.restart (a1 {domid} success)") == 2
    assert xend.names().count("a1") == 1


def test_never_does_not_restart_a_guest_reboot(xend: Xend) -> None:
    domid = started(xend, "n1", "never")
    guest_types(xend, domid, "reboot")
    wait_for(lambda: "n1" not in xend.names(), what="n1 gone")


def test_shutdown_reboot_from_xend_restarts_even_under_never(xend: Xend) -> None:
    domid = started(xend, "n2", "never")
    assert xend.op("n2", "shutdown", reason="reboot").status_code == 202
    restarted(xend, "n2", domid)
    assert sxp.child_value(xend.info("n2"), "id") == domid


def test_halt_cancels_a_restart_even_under_always(xend: Xend) -> None:
    started(xend, "h1", "always")
    xend.op("h1", "shutdown", reason="halt")
    wait_for(lambda: "h1" not in xend.names(), what="h1 gone")


def test_destroy_with_reboot_restarts(xend: Xend) -> None:
    domid = started(xend, "dr")
    assert xend.op("dr", "destroy", reason="reboot").status_code == 200
    restarted(xend, "dr", domid)
    assert "dr" in xend.names()


def test_a_crash_loop_meets_the_minimum_restart_time(xend: Xend) -> None:
    domid = started(xend, "loop", "always")
    guest_types(xend, domid, "crash")
    restarted(xend, "loop", domid)
    wait_for(lambda: "p" not in xend.state("loop"), what="loop running again")
    guest_types(xend, domid, "crash")
    xend.events.wait_line(f"xend.domain.restart (loop {domid} fail)")
    wait_for(lambda: "loop" not in xend.names(), what="loop gone")
    assert "VM loop restarting too fast" in xend.home.logfile.read_text()


# --- xend restarts -------------------------------------------------------------------------------


def test_kill_9_and_restart_with_three_running_domains(sim_xend: Callable[..., Xend]) -> None:
    xend = sim_xend()
    ids = {name: started(xend, name) for name in ("k1", "k2", "k3")}
    xend.op("k2", "pause")
    before = {name: xend.info(name) for name in ids}
    xend.home.kill9()
    assert xend.home.xend("status").returncode == 3
    xend.start()
    assert sorted(xend.names()) == ["Domain-0", "k1", "k2", "k3"]
    for name, domid in ids.items():
        info = xend.info(name)
        assert sxp.child_value(info, "id") == domid
        assert sxp.child_value(info, "config") == sxp.child_value(before[name], "config")
        assert sxp.child_value(info, "start_time") == sxp.child_value(before[name], "start_time")
    assert xend.state("k2")[2] == "p"


def test_a_domain_that_exited_while_xend_was_down_is_restarted_per_mode(
        sim_xend: Callable[..., Xend]) -> None:
    xend = sim_xend()
    domid = started(xend, "down1", "always")
    assert xend.home.xend("stop").returncode == 0
    driver = SimDriver(xend.home.simhv_socket)
    try:
        driver.shutdown(int(domid), ShutdownReason.POWEROFF)
        wait_for(lambda: driver.domain(int(domid)).state.shutdown, what="shut down")
    finally:
        driver.close()
    xend.start()
    restarted(xend, "down1", domid)


def adopted_stranger(xend: Xend, name: str) -> int:
    """A domain made behind xend's back, straight in the hypervisor, once xend adopted it
    under the name it has there."""
    driver = SimDriver(xend.home.simhv_socket)
    try:
        domid = driver.create(name, 16)
    finally:
        driver.close()
    wait_for(lambda: name in xend.names(), what="adoption")
    return domid


def test_a_domain_xend_does_not_know_is_adopted(xend: Xend) -> None:
    domid = adopted_stranger(xend, "stranger")
    assert sxp.child_value(xend.info("stranger"), "id") == str(domid)
    assert sxp.child(xend.info("stranger"), "config") is None


# --- bad input: a clear error and nothing left behind -------------------------------------------


def nothing_left(xend: Xend) -> None:
    assert xend.names() == ["Domain-0"]
    assert sorted(p.name for p in (xend.home.dbroot / "domain").iterdir()
                  if p.is_file()) == ["0"]


@pytest.mark.parametrize(("config", "status", "message"), [
    ("(vm (memory 32) (image (linux (kernel /k))))", 400, "missing vm name"),
    ("(vm (name 1x) (memory 32) (image (linux (kernel /k))))", 400, "invalid vm name"),
    ("(vm (name x) (image (linux (kernel /k))))", 400, "missing memory"),
    ("(vm (name x) (memory 0) (image (linux (kernel /k))))", 400, "invalid memory"),
    ("(vm (name x) (memory -5) (image (linux (kernel /k))))", 400, "invalid memory"),
    ("(vm (name x) (memory 32))", 400, "missing image"),
    ("(vm (name x) (memory 32) (image (plan8 (kernel /k))))", 400, "unknown image type"),
    ("(vm (name x) (memory 32) (restart sometimes) (image (linux (kernel /k))))", 400,
     "invalid restart mode"),
    ("(vm (name x) (memory 32) (image (linux (kernel /k)))", 400, "unexpected EOF"),
    ("(vm (name x) (memory 999999) (image (linux (kernel /k))))", None, "free"),
    ("(domain (name x))", 400, "expected (vm ...)"),
])
def test_bad_configs_are_refused_and_leave_nothing(
    xend: Xend, config: str, status: int | None, message: str
) -> None:
    reply = xend.post("/xend/domain/", op="create", config=config)
    assert 400 <= reply.status_code < 600
    if status is not None:
        assert reply.status_code == status
    error = sxp.parse(reply.text)
    assert sxp.name(error) == "xend.err" and message in error[1]
    nothing_left(xend)


def test_a_duplicate_name_is_a_409_and_the_first_domain_is_untouched(xend: Xend) -> None:
    first = xend.create(vm("dup"))
    reply = xend.post("/xend/domain/", op="create", config=vm("dup"))
    assert reply.status_code == 409
    assert "vm name clash: dup" in sxp.parse(reply.text)[1]
    assert xend.names().count("dup") == 1
    assert sxp.child_value(xend.info("dup"), "id") == sxp.child_value(first, "id")


@pytest.mark.parametrize(("dom", "fields", "status", "message"), [
    ("nosuch", {"op": "pause"}, 404, "invalid domain:nosuch"),
    ("b1", {"op": "shutdown", "reason": "explode"}, 400, "invalid reason:explode"),
    ("b1", {"op": "destroy", "reason": "poweroff"}, 400, "invalid reason:poweroff"),
    ("b1", {"op": "shutdown"}, 400, "Missing parameter: reason"),
    ("b1", {"op": "maxmem_set", "memory": "lots"}, 400, "invalid literal for int()"),
    ("b1", {"op": "mem_target_set", "target": "0"}, 400, "invalid target"),
    ("b1", {"op": "fly"}, 501, "Operation not implemented: fly"),
    ("Domain-0", {"op": "destroy", "reason": "halt"}, 409, "Domain-0 is the host"),
    ("0", {"op": "pause"}, 409, "Domain-0 is the host"),
])
def test_bad_ops_get_clear_errors(xend: Xend, dom: str, fields: dict, status: int,
                                  message: str) -> None:
    xend.create(vm("b1"))
    reply = xend.post(f"/xend/domain/{dom}", **fields)
    assert reply.status_code == status
    assert message in sxp.parse(reply.text)[1]
    assert sorted(xend.names()) == ["Domain-0", "b1"]


BLOCK_SCRATCH = os.path.join(os.path.dirname(__file__), "..", "data", "block-scratch")


def test_every_reference_example_is_accepted(sim_xend: Callable[..., Xend]) -> None:
    """With block scripts standing in for their made-up disks, every example builds."""
    script = os.path.abspath(BLOCK_SCRATCH)
    xend = sim_xend(f"(block-phy {script})\n(block-file {script})\n")
    examples = os.path.join(os.path.dirname(__file__), "..", "data", "reference-examples")
    for name in ("xen_config-xendom1.sxp", "xen_config-xendom2.sxp",
                 "xmexample1.expected.sxp", "xmexample2-vmid3.expected.sxp",
                 "ttylinux.expected.sxp"):
        with open(os.path.join(examples, name)) as example:
            info = xend.create(example.read())
        name_in = sxp.child_value(info, "name")
        vm = sxp.child_value(info, "config")
        devices = sxp.children(sxp.child(info, "devices"))
        assert len(devices) == len(sxp.children(vm, "device"))
        assert xend.op(name_in, "destroy", reason="halt").status_code == 200


def test_event_inject_publishes(xend: Xend) -> None:
    reply = xend.post("/xend/event/", op="inject", event="(xend.test.injected (a 1))")
    assert reply.status_code == 200
    xend.events.wait_line("xend.test.injected (xend.test.injected (a 1))")


def test_sysrq_shutdown_reaches_the_guest(xend: Xend) -> None:
    domid = started(xend, "sq")
    assert xend.op("sq", "shutdown", reason="sysrq", key="b").status_code == 202
    restarted(xend, "sq", domid)  # sysrq b reboots, onreboot restarts
    reply = xend.op("sq", "shutdown", reason="sysrq")
    assert reply.status_code == 400 and sxp.parse(reply.text)[1] == (
        "invalid sysrq key '': give one character (b reboots, s syncs, o powers off...) "
        "or its ASCII code")


def test_configure_gives_an_adopted_domain_its_config(xend: Xend) -> None:
    domid = adopted_stranger(xend, "bare")
    info = ["domain", ["id", str(domid)], ["config", sxp.parse(vm("restored", 16))]]
    reply = xend.op(str(domid), "configure", config=sxp.show(info))
    assert reply.status_code == 200, reply.text
    assert sxp.child_value(sxp.parse(reply.text), "name") == "restored"
    assert "restored" in xend.names()
    again = xend.op("restored", "configure", config=sxp.show(info))
    assert again.status_code == 409
    assert f"Domain already configured: {domid}" in sxp.parse(again.text)[1]


# A vif script whose "down" hangs the first time (until RELEASE exists), so that a test
# can kill xend while a domain's end is under way; later calls do nothing.
SLOW_DOWN = '''#!/bin/sh
[ "$1" = down ] || exit 0
here=$(dirname "$0")
[ -e "$here/once" ] && exit 0
touch "$here/once"
i=0
while [ ! -e "$here/release" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
'''


def test_a_crash_is_reported_once_though_xend_is_killed_while_it_ends(
        sim_xend: Callable[..., Xend], tmp_path: Path) -> None:
    # Found by bench/torture.py --qemu: one crash, two xend.domain.exit events, once before
    # and once after a restart of xend killed between the report and the domain's end.
    xend = sim_xend()
    script = tmp_path / "vif-slow-down"
    script.write_text(SLOW_DOWN)
    script.chmod(0o755)
    domid = sxp.child_value(xend.create(vm("crasher", 32, ["restart", "never"],
                                           ["device", ["vif", ["script", str(script)]]])), "id")
    xend.op("crasher", "unpause")
    exit_line = f"(name xend.domain.exit) (value (crasher {domid} crash))"
    try:
        assert xend.op("crasher", "shutdown", reason="sysrq", key="c").status_code == 202
        wait_for(lambda: (tmp_path / "once").exists(), what="the domain's end under way")
        xend.events.wait_line(f"xend.domain.exit (crasher {domid} crash)")
        xend.home.kill9()
    finally:
        (tmp_path / "release").touch()
    xend.start()
    wait_for(lambda: "crasher" not in xend.names(), what="the crashed domain to end")
    logged = (xend.home.dbroot / "events").read_text().splitlines()
    assert [line for line in logged if exit_line in line] != []
    assert len([line for line in logged if exit_line in line]) == 1, logged[-40:]
