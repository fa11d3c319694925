"""The simulated hypervisor and its guests, driven by a manual clock: no processes, no sleeps."""

from __future__ import annotations

import pytest

from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound
from xend_actors.hypervisor.base import (
    AtroposParams,
    BvtParams,
    LinuxImage,
    ShutdownReason,
)
from xend_actors.hypervisor.ring.messages import MemRequest, Shutdown, ShutdownSubtype
from xend_actors.hypervisor.sim.clock import ManualClock
from xend_actors.hypervisor.sim.console import BUFFER_LIMIT
from xend_actors.hypervisor.sim.memory import PAGE_SIZE, WORKING_SET, read_pages
from xend_actors.hypervisor.sim.model import SimHypervisor

DELAY = 0.03
IMAGE = LinuxImage("/boot/vmlinuz-2.6-xenU", "/boot/initrd.img", "root=/dev/xvda1 ro")


class Screen:
    """A console client that keeps what it is shown and can stop taking output."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.taking = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def ready(self) -> bool:
        return self.taking

    def close(self) -> None:
        self.closed = True

    @property
    def text(self) -> str:
        return self.data.decode()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hv(clock: ManualClock) -> SimHypervisor:
    return SimHypervisor(4096, 4, clock, shutdown_delay=DELAY)


@pytest.fixture
def changes(hv: SimHypervisor) -> list[int]:
    seen: list[int] = []
    hv.add_listener(seen.append)
    return seen


def booted(hv: SimHypervisor, name: str = "web", memory_mb: int = 256) -> tuple[int, Screen]:
    """A built, running domain with a console client attached from the start."""
    domid = hv.create(name, memory_mb)
    hv.build(domid, IMAGE)
    screen = Screen()
    hv.console(domid).attach(screen)
    hv.unpause(domid)
    return domid, screen


def shell(hv: SimHypervisor, domid: int, screen: Screen, line: str) -> str:
    """Type ``line`` and Enter; what the console showed in answer."""
    screen.data.clear()
    hv.console(domid).type(line.encode() + b"\r")
    return screen.text


def letters(hv: SimHypervisor, domid: int) -> str:
    return hv.domain(domid).state.letters


def request_shutdown(hv: SimHypervisor, domid: int, subtype: int, key: bytes = b"") -> None:
    hv.send_control(domid, Shutdown(subtype, key.decode() or None))


# --- ids ---------------------------------------------------------------------------------

def test_domain0_is_the_host_and_listed_like_any_domain(hv: SimHypervisor) -> None:
    [dom0] = hv.list_domains()
    assert (dom0.domid, dom0.name, dom0.memory_kb) == (0, "Domain-0", 512 * 1024)
    assert dom0.state.letters == "r----"
    with pytest.raises(Conflict, match="Domain-0: it is the host itself"):
        hv.destroy(0)


def test_new_domains_get_ids_from_1_upward_skipping_ids_in_use(hv: SimHypervisor) -> None:
    assert hv.create("a", 64, domid=2) == 2
    assert hv.create("b", 64) == 1
    assert hv.create("c", 64) == 3
    assert [d.domid for d in hv.list_domains()] == [0, 1, 2, 3]


def test_whether_a_name_is_taken_follows_creates_and_destroys(hv: SimHypervisor) -> None:
    assert hv.has_domain_named("Domain-0")
    assert not hv.has_domain_named("a")
    first, second = hv.create("a", 64), hv.create("a", 64)  # the sim lets two share it
    hv.destroy(first)
    assert hv.has_domain_named("a")
    hv.destroy(second)
    assert not hv.has_domain_named("a")


def test_a_requested_id_in_use_or_out_of_range_is_refused(hv: SimHypervisor) -> None:
    hv.create("a", 64, domid=7)
    with pytest.raises(Conflict, match="domain id 7 is in use"):
        hv.create("b", 64, domid=7)
    with pytest.raises(Conflict, match="domain id 0 is in use"):
        hv.create("b", 64, domid=0)
    with pytest.raises(BadRequest, match="out of range"):
        hv.create("b", 64, domid=0x7FF0)


def test_ids_wrap_below_xens_reserved_ids(clock: ManualClock) -> None:
    hv = SimHypervisor(512 + 0x8000, 1, clock)
    first = hv.create("a", 1)
    hv.destroy(first)
    assert hv.create("b", 1) == first + 1  # a freed id is not reused at once
    for _ in range(0x7FEF - 1):
        hv.create("c", 1)
    assert max(d.domid for d in hv.list_domains()) == 0x7FEF
    with pytest.raises(HypervisorError, match="every domain id is in use"):
        hv.create("d", 1)
    hv.destroy(5)
    assert hv.create("e", 1) == 5


def test_unknown_domain_is_not_found(hv: SimHypervisor) -> None:
    for call in (hv.domain, hv.pause, hv.unpause, hv.destroy, hv.console, hv.sched):
        with pytest.raises(NotFound, match="no domain 42"):
            call(42)


# --- memory ------------------------------------------------------------------------------

def test_memory_is_accounted_and_a_domain_too_large_is_refused(hv: SimHypervisor) -> None:
    assert hv.physinfo().free_memory_mb == 4096 - 512
    domid = hv.create("big", 3000)
    assert hv.physinfo().free_memory_mb == 584
    with pytest.raises(HypervisorError, match="cannot create domain more: it needs 600 MiB "
                                              "but only 584 MiB are free"):
        hv.create("more", 600)
    hv.destroy(domid)
    assert hv.physinfo().free_memory_mb == 4096 - 512
    assert [d.domid for d in hv.list_domains()] == [0]


def test_memory_must_be_at_least_one_mib(hv: SimHypervisor) -> None:
    with pytest.raises(BadRequest, match="at least 1 MiB"):
        hv.create("none", 0)


def test_memory_target_stays_within_maxmem_and_free_memory(hv: SimHypervisor) -> None:
    domid = hv.create("web", 256)
    hv.set_maxmem(domid, 512)
    hv.set_memory_target(domid, 400)
    assert hv.domain(domid).memory_kb == 400 * 1024
    assert hv.domain(domid).maxmem_kb == 512 * 1024
    assert hv.physinfo().free_memory_mb == 4096 - 512 - 400
    with pytest.raises(Conflict, match="its maximum is 512 MiB"):
        hv.set_memory_target(domid, 513)
    hv.set_memory_target(domid, 128)
    assert hv.physinfo().free_memory_mb == 4096 - 512 - 128
    other = hv.create("other", 3400)
    with pytest.raises(HypervisorError, match="only 56 MiB are free"):
        hv.set_memory_target(domid, 512)
    hv.destroy(other)


# --- flags, states, cpu time -------------------------------------------------------------

def test_pause_and_unpause_show_in_flags_and_tell_listeners(
        hv: SimHypervisor, changes: list[int]) -> None:
    domid = hv.create("web", 256)
    assert letters(hv, domid) == "--p--"
    hv.build(domid, IMAGE)
    hv.unpause(domid)
    assert letters(hv, domid) == "-b---"  # an idle guest is blocked, as Xen shows it
    hv.pause(domid)
    assert letters(hv, domid) == "--p--"
    assert changes == [domid, domid]


def test_an_unbuilt_domain_cannot_be_unpaused(hv: SimHypervisor) -> None:
    domid = hv.create("web", 256)
    with pytest.raises(Conflict, match=f"cannot unpause domain {domid}: it has not been built"):
        hv.unpause(domid)


def test_cpu_time_advances_only_while_the_domain_runs(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid = hv.create("web", 256)
    hv.build(domid, IMAGE)
    clock.advance(100)
    assert hv.domain(domid).cpu_time == 0
    hv.unpause(domid)
    clock.advance(100)
    running = hv.domain(domid).cpu_time
    assert running > 0
    hv.pause(domid)
    clock.advance(100)
    assert hv.domain(domid).cpu_time == running
    hv.unpause(domid)
    request_shutdown(hv, domid, 0)
    clock.advance(1)
    stopped = hv.domain(domid).cpu_time
    clock.advance(100)
    assert hv.domain(domid).cpu_time == stopped


def test_a_flooding_guest_runs_and_stops_while_the_console_is_full(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, screen = booted(hv)
    screen.taking = False
    shell(hv, domid, screen, "flood 1000000")
    assert letters(hv, domid) == "r----"
    before = hv.domain(domid).cpu_time
    clock.advance(1)
    assert hv.domain(domid).cpu_time - before == pytest.approx(1.0)
    assert len(screen.data) < 1000000
    screen.taking = True
    hv.console(domid).sink_ready()
    clock.advance(0)
    assert screen.text.endswith("\r\n# ")
    assert letters(hv, domid) == "-b---"


def test_flood_writes_exactly_the_bytes_asked_for(hv: SimHypervisor, clock: ManualClock) -> None:
    domid, screen = booted(hv)
    shell(hv, domid, screen, "flood 200000")
    clock.advance(0)
    output = screen.data.removeprefix(b"flood 200000\r\n").removesuffix(b"# ")
    assert len(output) == 200000  # 2500 whole lines of 80 bytes
    assert all(0x20 < byte < 0x7F for byte in output.replace(b"\r\n", b""))


# --- shutdown requests ---------------------------------------------------------------------

@pytest.mark.parametrize(("subtype", "reason", "says"), [
    (0, ShutdownReason.POWEROFF, "going down for power off"),
    (1, ShutdownReason.REBOOT, "going down for reboot"),
    (2, ShutdownReason.SUSPEND, "Suspending"),
])
def test_a_shutdown_request_shuts_the_guest_down_after_the_delay(
        hv: SimHypervisor, clock: ManualClock, changes: list[int],
        subtype: int, reason: ShutdownReason, says: str) -> None:
    domid, screen = booted(hv)
    changes.clear()
    request_shutdown(hv, domid, subtype)
    assert says in screen.text
    clock.advance(DELAY / 2)
    assert letters(hv, domid) == "-b---"
    clock.advance(DELAY)
    info = hv.domain(domid)
    assert info.state.letters == "---s-"
    assert info.shutdown_reason is reason
    assert changes == [domid]
    assert f"(XEN) domain {domid} shut down: reason {reason.value}" in hv.dmesg()


def test_a_paused_guest_acts_on_a_request_only_once_unpaused(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, screen = booted(hv)
    hv.pause(domid)
    request_shutdown(hv, domid, 0)
    clock.advance(10)
    assert letters(hv, domid) == "--p--"
    assert "going down" not in screen.text
    hv.unpause(domid)
    clock.advance(DELAY)
    assert hv.domain(domid).shutdown_reason is ShutdownReason.POWEROFF


@pytest.mark.parametrize(("key", "reason", "crashed"), [
    (b"b", ShutdownReason.REBOOT, False),
    (b"o", ShutdownReason.POWEROFF, False),
    (b"c", None, True),
])
def test_sysrq_keys_reboot_power_off_or_crash(
        hv: SimHypervisor, clock: ManualClock,
        key: bytes, reason: ShutdownReason | None, crashed: bool) -> None:
    domid, screen = booted(hv)
    request_shutdown(hv, domid, 3, key)
    clock.advance(DELAY)
    info = hv.domain(domid)
    assert (info.shutdown_reason, info.state.crashed) == (reason, crashed)
    assert "SysRq : " in screen.text


def test_another_sysrq_key_prints_help_and_changes_nothing(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, screen = booted(hv)
    request_shutdown(hv, domid, 3, b"h")
    clock.advance(1)
    assert "SysRq : HELP" in screen.text
    assert letters(hv, domid) == "-b---"


def test_bad_control_messages_are_refused(hv: SimHypervisor) -> None:
    domid, _ = booted(hv)
    with pytest.raises(BadRequest, match="needs a key"):
        request_shutdown(hv, domid, 3)
    with pytest.raises(BadRequest, match="shutdown reason 9 is not known"):
        request_shutdown(hv, domid, 9)
    with pytest.raises(BadRequest, match="no handler for control messages of type 7"):
        hv.send_control(domid, MemRequest(64 * 256))
    with pytest.raises(Conflict, match="host itself"):
        request_shutdown(hv, 0, 0)


def test_a_paused_guests_control_ring_fills_up(hv: SimHypervisor) -> None:
    domid, _ = booted(hv)
    hv.pause(domid)
    for _ in range(8):
        request_shutdown(hv, domid, 3, b"h")
    with pytest.raises(Conflict, match=r"control ring of domain \d+ is full"):
        request_shutdown(hv, domid, 0)


def test_a_shut_down_domain_stays_listed_until_destroyed(
        hv: SimHypervisor, clock: ManualClock, changes: list[int]) -> None:
    domid, screen = booted(hv, memory_mb=1000)
    request_shutdown(hv, domid, 0)
    clock.advance(1)
    assert domid in [d.domid for d in hv.list_domains()]
    assert hv.physinfo().free_memory_mb == 4096 - 512 - 1000
    changes.clear()
    hv.destroy(domid)
    assert [d.domid for d in hv.list_domains()] == [0]
    assert hv.physinfo().free_memory_mb == 4096 - 512
    assert changes == [domid]
    assert screen.closed


# --- the shell ---------------------------------------------------------------------------

def test_the_guest_boots_with_a_banner_and_a_prompt(hv: SimHypervisor) -> None:
    _, screen = booted(hv)
    assert "/boot/vmlinuz-2.6-xenU" in screen.text
    assert "root=/dev/xvda1 ro" in screen.text
    assert screen.text.endswith("\r\n# ")


def test_echo_echoes_the_typing_and_prints_the_words(hv: SimHypervisor) -> None:
    domid, screen = booted(hv)
    assert shell(hv, domid, screen, "echo hi") == "echo hi\r\nhi\r\n# "


def test_a_terminal_erases_with_backspace_and_takes_cr_lf_as_one_enter(
        hv: SimHypervisor) -> None:
    domid, screen = booted(hv)
    screen.data.clear()
    hv.console(domid).type(b"echo hx\x7fi\r\n")
    assert screen.text == "echo hx\b \bi\r\nhi\r\n# "


def test_an_unknown_command_is_not_found(hv: SimHypervisor) -> None:
    domid, screen = booted(hv)
    assert shell(hv, domid, screen, "frobnicate now") == (
        "frobnicate now\r\nsh: frobnicate: not found\r\n# ")


def test_uptime_counts_from_boot_without_paused_time(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, screen = booted(hv)
    clock.advance(5)
    hv.pause(domid)
    clock.advance(100)
    hv.unpause(domid)
    clock.advance(2)
    assert "up 7.00 seconds" in shell(hv, domid, screen, "uptime")


@pytest.mark.parametrize(("command", "reason"), [
    ("poweroff", ShutdownReason.POWEROFF),
    ("halt", ShutdownReason.POWEROFF),
    ("reboot", ShutdownReason.REBOOT),
])
def test_shell_commands_shut_the_guest_down(
        hv: SimHypervisor, clock: ManualClock, command: str, reason: ShutdownReason) -> None:
    domid, screen = booted(hv)
    assert "The system is going down" in shell(hv, domid, screen, command)
    clock.advance(DELAY)
    assert hv.domain(domid).shutdown_reason is reason


def test_crash_from_the_shell_sets_the_crashed_flag_at_once(
        hv: SimHypervisor, changes: list[int]) -> None:
    domid, screen = booted(hv)
    assert "Kernel panic" in shell(hv, domid, screen, "crash")
    info = hv.domain(domid)
    assert (info.state.letters, info.shutdown_reason) == ("----c", None)
    assert info.state.dead
    assert changes[-1] == domid


def test_output_while_nobody_is_attached_waits_for_the_next_client(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid = hv.create("web", 256)
    hv.build(domid, IMAGE)
    hv.unpause(domid)
    hv.console(domid).type(b"echo while away\r")
    screen = Screen()
    hv.console(domid).attach(screen)
    assert "Kernel command line: root=/dev/xvda1 ro" in screen.text
    assert screen.text.endswith("echo while away\r\nwhile away\r\n# ")


def test_output_kept_while_detached_is_bounded(hv: SimHypervisor, clock: ManualClock) -> None:
    domid, first = booted(hv)
    hv.console(domid).detach(first)
    hv.console(domid).type(b"flood 300000\r")
    clock.advance(0)
    second = Screen()
    hv.console(domid).attach(second)
    assert len(second.data) == BUFFER_LIMIT
    assert second.text.endswith("\r\n# ")


def test_a_new_console_client_replaces_the_old(hv: SimHypervisor) -> None:
    domid, first = booted(hv)
    second = Screen()
    hv.console(domid).attach(second)
    assert first.closed
    assert "hi\r\n" in shell(hv, domid, second, "echo hi")


# --- scheduling and the log ----------------------------------------------------------------

def test_scheduler_parameters_are_kept_per_domain(hv: SimHypervisor) -> None:
    domid = hv.create("web", 256)
    assert hv.sched(domid) == []
    bvt = BvtParams(mcuadv=10, warpback=1, warpvalue=2, warpl=3, warpu=4)
    atropos = AtroposParams(period=100, slice=10, latency=5, xtratime=1)
    hv.set_sched(domid, bvt)
    hv.set_sched(domid, atropos)
    assert hv.sched(domid) == [bvt, atropos]
    assert hv.sched(0) == []


def test_a_domain_runs_on_the_cpu_with_the_fewest_domains(hv: SimHypervisor) -> None:
    assert hv.cpus == 4 and hv.domain(0).cpu == 0
    first, second, third, fourth = (hv.create(f"d{n}", 16) for n in range(4))
    assert [hv.domain(d).cpu for d in (first, second, third, fourth)] == [1, 2, 3, 0]
    assert hv.domain(hv.create("pinned", 16, cpu=2)).cpu == 2
    hv.destroy(second)  # cpu 2 keeps "pinned", cpu 1 is the first with one domain
    assert hv.domain(hv.create("d5", 16)).cpu == 1


def test_pincpu_takes_a_cpu_of_the_host_or_any(hv: SimHypervisor) -> None:
    domid = hv.create("web", 256)
    hv.pincpu(domid, 3)
    assert hv.domain(domid).cpu == 3
    hv.pincpu(domid, -1)
    assert hv.domain(domid).cpu == 3  # unpinned, it runs on where it was
    with pytest.raises(BadRequest, match=r"0\.\.3, got 4"):
        hv.pincpu(domid, 4)


def test_dmesg_tells_what_happened_and_clears_on_request(hv: SimHypervisor) -> None:
    domid = hv.create("web", 256)
    hv.destroy(domid)
    text = hv.dmesg(clear=True)
    assert f"(XEN) domain {domid} created: web, 256 MiB\n" in text
    assert text.endswith(f"(XEN) domain {domid} destroyed\n")
    assert hv.dmesg() == ""


def test_dmesg_is_a_bounded_ring(hv: SimHypervisor) -> None:
    for _ in range(500):
        hv.destroy(hv.create("a-domain-with-a-long-name", 1))
    text = hv.dmesg()
    assert 15 * 1024 < len(text) <= 16 * 1024
    assert text.startswith("(XEN) domain")


# --- save and restore ------------------------------------------------------------------------

def suspended(hv: SimHypervisor, clock: ManualClock) -> tuple[int, Screen]:
    domid, screen = booted(hv)
    shell(hv, domid, screen, "echo before-the-save")
    clock.advance(5.0)
    request_shutdown(hv, domid, ShutdownSubtype.SUSPEND)
    clock.advance(DELAY)
    assert hv.domain(domid).shutdown_reason is ShutdownReason.SUSPEND
    return domid, screen


def test_a_suspended_guest_is_restored_with_its_screen_and_uptime(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, _ = suspended(hv, clock)
    state = hv.save_state(domid)
    hv.destroy(domid)
    clock.advance(100.0)  # time in the file does not count as uptime
    new = hv.restore_state("web", 256, state)
    assert letters(hv, new) == "--p--"
    screen = Screen()
    hv.console(new).attach(screen)
    hv.unpause(new)
    assert "before-the-save" in screen.text
    assert f"Restored from a saved state (now domain {new})" in screen.text
    assert screen.text.endswith("# ")
    uptime = float(shell(hv, new, screen, "uptime").split("up ")[1].split()[0])
    assert 5.0 <= uptime < 6.0
    assert "hi" in shell(hv, new, screen, "echo hi")


def test_only_a_suspended_domain_can_be_saved_or_resumed(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, _ = booted(hv)
    with pytest.raises(Conflict, match="not suspended"):
        hv.save_state(domid)
    with pytest.raises(Conflict, match="not suspended"):
        hv.resume(domid)
    request_shutdown(hv, domid, ShutdownSubtype.POWEROFF)
    clock.advance(DELAY)
    with pytest.raises(Conflict, match="not suspended"):
        hv.save_state(domid)


def test_a_resumed_guest_runs_on(hv: SimHypervisor, clock: ManualClock) -> None:
    domid, screen = suspended(hv, clock)
    hv.resume(domid)
    assert hv.domain(domid).shutdown_reason is None
    assert letters(hv, domid) == "-b---"
    assert "Resumed" in screen.text
    assert "still here" in shell(hv, domid, screen, "echo still here")


def test_a_bad_state_is_refused_and_leaves_no_domain(hv: SimHypervisor) -> None:
    with pytest.raises(BadRequest, match="not a saved sim guest state"):
        hv.restore_state("web", 256, b"{not json")
    assert [d.domid for d in hv.list_domains()] == [0]


# --- memory, for migration ---------------------------------------------------------------

def test_the_dirty_log_names_the_pages_a_working_guest_wrote(hv: SimHypervisor) -> None:
    domid, screen = booted(hv, memory_mb=1)
    seed, pages, _ = hv.memory_map(domid)
    assert pages == 256
    hv.dirty_pages(domid)  # the log starts now
    assert hv.dirty_pages(domid) == []
    shell(hv, domid, screen, "echo hi")
    dirty = hv.dirty_pages(domid)
    assert dirty and all(0 <= page < WORKING_SET for page in dirty)
    assert hv.dirty_pages(domid) == []
    _, _, versions = hv.memory_map(domid)
    assert set(dirty) <= set(versions)
    before = read_pages(seed, versions, 0, WORKING_SET)
    shell(hv, domid, screen, "echo again")
    assert read_pages(seed, hv.memory_map(domid)[2], 0, WORKING_SET) != before
    assert len(before) == WORKING_SET * PAGE_SIZE


def test_the_memory_goes_along_with_the_saved_state(
        hv: SimHypervisor, clock: ManualClock) -> None:
    domid, _ = suspended(hv, clock)
    seed, pages, versions = hv.memory_map(domid)
    new = hv.restore_state("web2", 256, hv.save_state(domid))
    assert hv.memory_map(new) == (seed, pages, versions)
    assert read_pages(seed, versions, 0, pages) == read_pages(*hv.memory_map(new)[::2], 0, pages)
