"""What a new user of the installed ``xm`` meets (issue 17): ``xm sysrq``, negative numbers
as values, ``xm create --help_config``, errors that name the file, and shell completion
through click's own entry point and a real bash."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from tests.support.xend import XM, run_xm
from xend_actors.xm.configfile import _VARIABLES

pytestmark = pytest.mark.integration

KERNEL = "/boot/vmlinuz-sim"


def xm_ok(home: XendHome, *args: str) -> str:
    done = run_xm(home, *args)
    assert done.returncode == 0 and done.stderr == "", (args, done.stdout, done.stderr)
    return done.stdout


def error_line(home: XendHome, *args: str, cwd: Path | None = None) -> str:
    """The one ``Error: ...`` line a failing xm prints (exit status 1, nothing else)."""
    done = run_xm(home, *args, cwd=cwd)
    assert done.returncode == 1 and done.stdout == "", (args, done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: "), line
    return line.removeprefix("Error: ")


def names(home: XendHome) -> list[str]:
    return [line.split()[0] for line in xm_ok(home, "list").splitlines()[1:]]


def create(home: XendHome, folder: Path, name: str) -> None:
    path = folder / f"{name}.sxp"
    path.write_text(f"(vm (name {name}) (memory 16) (image (linux (kernel {KERNEL}))))\n")
    xm_ok(home, "create", "-q", "-F", str(path))


def test_sysrq_sends_the_key_to_the_guest(shared_home: XendHome, tmp_path: Path) -> None:
    create(shared_home, tmp_path, "rq")
    assert xm_ok(shared_home, "sysrq", "rq", "o") == ""  # SysRq o: power off
    wait_for(lambda: "rq" not in names(shared_home), what="the guest powered off")
    assert "sysrq" in xm_ok(shared_home, "help")
    assert xm_ok(shared_home, "help", "sysrq").startswith("Usage: xm sysrq [OPTIONS] DOM KEY")


def test_sysrq_errors_say_what_a_key_may_be(shared_home: XendHome, tmp_path: Path) -> None:
    create(shared_home, tmp_path, "rq2")
    assert error_line(shared_home, "sysrq", "rq2", "xy") == (
        "invalid sysrq key 'xy': give one character (b reboots, s syncs, o powers off...) "
        "or its ASCII code")
    assert error_line(shared_home, "sysrq", "rq2") == "Missing argument 'KEY'."


def test_negative_numbers_reach_xend(shared_home: XendHome, tmp_path: Path) -> None:
    create(shared_home, tmp_path, "neg")
    # click alone said "No such option: -3"; xend says what the value may be.
    assert error_line(shared_home, "maxmem", "neg", "-3") == (
        "invalid memory -3: give a whole number of MiB, at least 1")
    assert error_line(shared_home, "balloon", "neg", "-1") == (
        "invalid target -1: give a whole number of MiB, at least 1")
    xm_ok(shared_home, "pincpu", "neg", "0")
    xm_ok(shared_home, "pincpu", "neg", "-1")  # -1: any cpu, as the original took it
    assert "has no vbd -2" in error_line(shared_home, "vbd-destroy", "neg", "-2")
    # Options still work beside a negative value, and an unknown one is still refused.
    assert error_line(shared_home, "maxmem", "--bogus", "neg", "-3") == \
        "No such option '--bogus'."


def test_help_config_lists_every_variable_the_parser_takes(
        shared_home: XendHome, tmp_path: Path) -> None:
    printed = xm_ok(shared_home, "create", "--help_config")
    listed = [line.split("=", 1)[0].strip() for line in printed.splitlines()
              if line.startswith(" ") and not line.startswith("    ")]
    assert listed == [var.name for var in _VARIABLES]
    assert " memory=MEMORY\n    Domain memory in MB.\n    Default 128\n" in printed
    assert " disk=TYPE:DEV,VDEV,MODE[,DOM]\n" in printed
    assert names(shared_home).count("Domain-0") == 1  # nothing was created


def test_help_config_with_a_file_lists_the_variables_it_declares(
        shared_home: XendHome) -> None:
    examples = Path(__file__).resolve().parents[2] / "etc" / "examples"
    printed = xm_ok(shared_home, "create", "--help_config", "--path", str(examples),
                    "xmexample2")
    assert f"Configuration variables for {examples}/xmexample2:\n\n" \
        "vmid         Virtual machine id. Integer greater than 0.\n" in printed


def test_config_file_errors_name_the_file(shared_home: XendHome, tmp_path: Path) -> None:
    broken = tmp_path / "broken.sxp"
    broken.write_text("(vm (name b)\n    (memory 16)\n")
    assert error_line(shared_home, "create", "-F", str(broken)) == \
        f"Error in config file {broken} line 3, column 1: unexpected EOF"
    script = tmp_path / "broken.xm"
    script.write_text(f"kernel = '{KERNEL}'\nmemory = (16\n")
    message = error_line(shared_home, "create", "-q", str(script))
    assert message.startswith(f"Error in config file {script} line 2: ")
    assert "Domain-0" in names(shared_home) and "b" not in names(shared_home)


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What click's completion entry point of the real xm offers after ``words``."""
    assert XM is not None
    parts = words.split(" ")
    done = subprocess.run([XM], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {}), "_XM_COMPLETE": "bash_complete",
                               "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_completion_offers_commands_and_options() -> None:
    assert complete("xm pa") == ["pause"]
    assert complete("xm vbd-") == ["vbd-create", "vbd-destroy", "vbd-list"]
    assert complete("xm create --pa") == ["--path", "--paused"]
    assert complete("xm no-such-command x") == []  # nothing offered, nothing said


def test_completion_offers_the_domains_xend_lists(
        shared_home: XendHome, tmp_path: Path) -> None:
    create(shared_home, tmp_path, "tab-one")
    create(shared_home, tmp_path, "tab-two")
    reach = {"XEND_UNIX_PATH": str(shared_home.unix_path)}
    assert complete("xm pause tab-", reach) == ["tab-one", "tab-two"]
    assert complete("xm vbd-list tab-t", reach) == ["tab-two"]
    assert "Domain-0" in complete("xm list ", reach)
    # A xend that is not there: nothing offered, nothing said.
    assert complete("xm pause tab-", {"XEND_UNIX_PATH": str(tmp_path / "none.sock")}) == []


def test_completion_in_a_real_bash() -> None:
    """The script ``_XM_COMPLETE=bash_source xm`` prints, loaded into bash, completes."""
    assert XM is not None
    script = ('eval "$(_XM_COMPLETE=bash_source xm)"\n'
              "COMP_WORDS=(xm sys); COMP_CWORD=1; _xm_completion xm\n"
              'echo "${COMPREPLY[@]}"\n'
              "COMPREPLY=(); COMP_WORDS=(xm dom); COMP_CWORD=1; _xm_completion xm\n"
              'echo "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{Path(XM).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["sysrq", "domid domname"]


def test_list_shows_the_cpu_each_domain_runs_on(shared_home: XendHome, tmp_path: Path) -> None:
    """Not -1 for an unpinned domain: the CPU it runs on, as Xen's xm list showed."""
    create(shared_home, tmp_path, "where")
    rows = {line[:16].strip(): line[16:].split()
            for line in xm_ok(shared_home, "list").splitlines()[1:]}
    assert rows["Domain-0"][2] == "0"
    assert 0 <= int(rows["where"][2]) < 4  # the sim's 4 cpus (sim-cpus)
    xm_ok(shared_home, "pincpu", "where", "3")
    wait_for(lambda: xm_ok(shared_home, "list", "where").splitlines()[1][16:].split()[2] == "3",
             what="pinned to cpu 3")


def test_errors_say_what_was_wrong_and_what_is_allowed(
        shared_home: XendHome, tmp_path: Path) -> None:
    from xend_actors.domain.config import NAME_RULE

    spaced = tmp_path / "spaced.sxp"
    spaced.write_text(f"(vm (name 'a b') (memory 16) (image (linux (kernel {KERNEL}))))\n")
    assert error_line(shared_home, "create", "-F", str(spaced)) == \
        f"invalid vm name 'a b': {NAME_RULE}"
    assert "letters, digits and _ . : + - /, not starting with a digit" in NAME_RULE
    assert error_line(shared_home, "pause", "nosuch") == \
        "invalid domain:nosuch: no domain has that name or id"
    assert error_line(shared_home, "create", "-q", f"kernel={KERNEL}", "--path", str(tmp_path),
                      "memory=lots", cwd=tmp_path) == \
        f"Unable to open config file: xmdefconfig: not in {tmp_path} (give --path DIR:DIR)"
    (tmp_path / "vm.xm").write_text(f"kernel = '{KERNEL}'\n")
    assert error_line(shared_home, "create", "-q", "--path", str(tmp_path), "vm.xm",
                      "memory=lots") == \
        "Invalid value for memory: 'lots': expected a whole number"
    assert error_line(shared_home, "create", "-q", "--path", str(tmp_path), "vm.xm",
                      "disk=phy:sda1") == ("Invalid disk specifier: phy:sda1: expected "
                                           "TYPE:DEV,VDEV,MODE[,DOM] (phy:hda1,hda1,w)")
    assert error_line(shared_home, "shutdown") == \
        "Missing domain: give DOM, or -a for every domain but Domain-0"
