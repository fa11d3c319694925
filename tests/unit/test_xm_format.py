"""What xm prints without a xend: the list table, node info, help, and command prefixes."""

from __future__ import annotations

import click
import pytest

from xend_actors import sxp
from xend_actors.xm.domain import list_table, shutdown_reason
from xend_actors.xm.host import info_text
from xend_actors.xm.main import COMMAND_MODULES, help_text, main, resolve

DOMAIN0 = sxp.parse("(domain (id 0) (name Domain-0) (memory 251) (maxmem 4096)"
                    " (state r----) (cpu 0) (cpu_time 172.2114) (devices))")
TTYLINUX = sxp.parse(
    "(domain (id 5) (name ttylinux) (memory 63) (maxmem 64) (state -b---) (cpu 0)"
    " (cpu_time 3.012345678) (up_time 125.450000048) (start_time 1099651234.56)"
    " (console (status listening) (id 21) (domain 5) (local_port 21) (remote_port 1)"
    " (console_port 9605))"
    " (devices (vif (idx 0) (vif 0) (mac aa:00:00:6e:36:5e) (evtchn 22 2) (index 0)))"
    " (config (vm (name ttylinux))))"
)


def test_list_table_is_the_original_layout() -> None:
    assert list_table([DOMAIN0, TTYLINUX]) == (
        "Name              Id  Mem(MB)  CPU  State  Time(s)  Console\n"
        "Domain-0           0      251    0  r----    172.2        \n"
        "ttylinux           5       63    0  -b---      3.0    9605\n"
    )


def test_list_row_of_a_domain_not_yet_refreshed_has_defaults() -> None:
    fresh = sxp.parse("(domain (id 7) (name new) (memory 16) (devices))")
    assert list_table([fresh]).splitlines()[1] == (
        "new                7       16    0     ??      0.0        "
    )


def test_list_keeps_long_names_and_big_numbers_whole() -> None:
    big = sxp.parse("(domain (id 1234) (name a-rather-long-domain-name) (memory 65536)"
                    " (state -b---) (cpu 12) (cpu_time 1234567.89))")
    assert list_table([big]).splitlines()[1] == (
        "a-rather-long-domain-name 1234    65536   12  -b---  1234567.9        "
    )


def test_info_is_one_padded_line_per_field() -> None:
    node = sxp.parse("(node (system Linux) (host h1) (cores 4) (free_memory 512))")
    assert info_text(node) == (
        "system                 : Linux\n"
        "host                   : h1\n"
        "cores                  : 4\n"
        "free_memory            : 512\n"
    )


@pytest.mark.parametrize(("typed", "command"), [
    ("info", "info"), ("inf", "info"), ("li", "list"), ("cr", "create"),
    ("bvt", "bvt"),  # exact, though also a prefix of bvt_ctxallow
    ("bvt_", "bvt_ctxallow"), ("dmesg", "dmesg"), ("domn", "domname"),
])
def test_a_unique_prefix_names_its_command(typed: str, command: str) -> None:
    assert resolve(typed, COMMAND_MODULES) == command


@pytest.mark.parametrize("typed", ["l", "d", "dom", "p", "", "lists", "frob"])
def test_ambiguous_and_unknown_names_resolve_to_nothing(typed: str) -> None:
    assert resolve(typed, COMMAND_MODULES) is None


def test_unknown_or_ambiguous_command_is_an_error_with_a_hint(
        capsys: pytest.CaptureFixture[str]) -> None:
    for typed in ("frob", "l"):
        assert main([typed]) == 1
        captured = capsys.readouterr()
        assert captured.err == (f"Error: Unknown command: {typed}\n"
                                "Try 'xm help' for more information.\n")
        assert captured.out == ""


def test_bad_arguments_are_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["maxmem", "vm1", "lots"], ["pause"], ["list", "--frob"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and err.count("\n") == 1, err


def test_help_lists_commands_by_group(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text()
    lines = text.splitlines()
    assert "list           List information about domains: all, or the DOMs given." in lines
    assert "info           Print information about the host: its system, CPUs and memory." \
        in lines
    titles = [line for line in lines if line.endswith(":")]
    assert titles == ["Commands related to consoles:", "Commands on domains:",
                      "Commands related to the xen host (node):",
                      "Commands controlling scheduling:"]
    assert lines[-1] == "Try 'xm help CMD' for help on CMD"
    for argv in ([], ["help"], ["-h"], ["he"]):
        assert main(argv) == 0
        assert capsys.readouterr().out == text


def test_every_command_help_lists_runs_by_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    """xm finds a command without importing every module: what help lists is what runs."""
    listed = [line.split()[0] for line in help_text().splitlines()[1:-1]
              if line and not line.endswith(":")]
    assert sorted(listed) == sorted(COMMAND_MODULES)
    for name in listed:
        assert main([name, "-h"]) == 0
        assert f"Usage: xm {name} " in capsys.readouterr().out


def test_help_on_a_command_and_its_h_switch_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["help", "shut"]) == 0
    via_help = capsys.readouterr().out
    assert main(["shutdown", "-h"]) == 0
    assert capsys.readouterr().out == via_help
    assert "Usage: xm shutdown [OPTIONS] [DOM]" in via_help
    assert "-w, --wait" in via_help


@pytest.mark.parametrize(("wait", "halt", "reboot", "reason"), [
    (False, False, False, "poweroff"), (False, True, False, "halt"),
    (False, False, True, "reboot"), (True, False, False, "halt"), (True, True, False, "halt"),
])
def test_shutdown_reason_follows_the_switches(wait: bool, halt: bool, reboot: bool,
                                              reason: str) -> None:
    assert shutdown_reason(wait, halt, reboot) == reason


@pytest.mark.parametrize(("wait", "halt", "message"), [
    (True, False, "Can't specify wait and reboot"),
    (False, True, "Can't specify halt and reboot"),
])
def test_conflicting_shutdown_switches_are_refused(wait: bool, halt: bool,
                                                   message: str) -> None:
    with pytest.raises(click.ClickException, match=message):
        shutdown_reason(wait, halt, reboot=True)
