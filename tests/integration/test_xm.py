"""The installed ``xm`` command against a real xend (sim driver), as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.home import XendHome
from tests.support.ports import free_port
from tests.support.processes import wait_for
from tests.support.xend import run_xm
from xend_actors import sxp

pytestmark = pytest.mark.integration

KERNEL = "/boot/vmlinuz-sim"
EXAMPLES = Path(__file__).resolve().parents[2] / "etc" / "examples"

Xm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def xm(shared_home: XendHome) -> Xm:
    """Run xm against the running xend; the result must be a success unless ``ok=False``."""

    def run(*args: str, ok: bool = True, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = run_xm(shared_home, *args, cwd=cwd, env=env)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            assert done.stderr == "", (args, done.stderr)
        return done

    return run


def is_one_error_line(done: subprocess.CompletedProcess[str]) -> bool:
    return (done.returncode == 1 and done.stderr.startswith("Error: ")
            and done.stderr.count("\n") == 1)


def sxp_file(folder: Path, name: str, memory: int = 16) -> Path:
    path = folder / f"{name}.sxp"
    path.write_text(f"(vm (name {name}) (memory {memory})\n"
                    f"    (image (linux (kernel {KERNEL}))))\n")
    return path


def rows(xm: Xm) -> dict[str, list[str]]:
    """``xm list`` as name → the row's other columns."""
    lines = xm("list").stdout.splitlines()
    assert lines[0] == "Name              Id  Mem(MB)  CPU  State  Time(s)  Console"
    return {line[:16].strip(): line[16:].split() for line in lines[1:]}


def state(xm: Xm, name: str) -> str:
    return rows(xm)[name][3]


def info(xm: Xm, name: str) -> sxp.Value:
    return sxp.parse(xm("list", "--long", name).stdout)


def gone(xm: Xm, name: str) -> bool:
    return name not in rows(xm)


# --- host commands, dispatch and errors ---------------------------------------------------

def test_info_prints_the_node_one_field_a_line(xm: Xm) -> None:
    lines = xm("info").stdout.splitlines()
    assert lines[0] == f"{'system':<23}: {os.uname().sysname}"
    assert f"{'host':<23}: {os.uname().nodename}" in lines
    assert any(line.startswith(f"{'memory':<23}: ") for line in lines)


def test_a_unique_prefix_runs_the_command(xm: Xm) -> None:
    assert xm("inf").stdout == xm("info").stdout


def test_list_shows_domain0(xm: Xm) -> None:
    dom0 = rows(xm)["Domain-0"]
    assert dom0[0] == "0"
    assert int(dom0[1]) > 0
    assert "r" in dom0[3]


def test_log_prints_the_xend_log(xm: Xm) -> None:
    assert "Xend Daemon started" in xm("log").stdout


def test_dmesg_prints_and_clears_the_hypervisor_messages(xm: Xm) -> None:
    assert xm("dmesg").stdout.strip() != ""
    assert xm("dmesg", "--clear").stdout == ""
    assert xm("dmesg").stdout.strip() == ""


def test_help_lists_the_commands(xm: Xm) -> None:
    out = xm("help").stdout
    assert "create         " in out and "shutdown       " in out and "rrobin         " in out
    assert out.endswith("Try 'xm help CMD' for help on CMD\n")
    assert "Usage: xm pause [OPTIONS] DOM" in xm("help", "pause").stdout
    assert "Usage: xm pause [OPTIONS] DOM" in xm("pause", "-h").stdout


def test_unknown_and_ambiguous_commands_are_errors(xm: Xm) -> None:
    for typed in ("frob", "l"):
        done = xm(typed, ok=False)
        assert done.returncode == 1
        assert done.stderr == (f"Error: Unknown command: {typed}\n"
                               "Try 'xm help' for more information.\n")


def test_no_xend_is_one_error_line() -> None:
    done = run_xm(f"127.0.0.1:{free_port()}", "list")
    assert is_one_error_line(done)
    assert "Error connecting to xend" in done.stderr and "is xend running?" in done.stderr


def test_unix_socket_by_switch_or_environment(shared_home: XendHome) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    by_switch = run_xm(nowhere, "--unix", str(shared_home.unix_path), "info")
    by_env = run_xm(nowhere, "info", env={"XEND_UNIX_PATH": str(shared_home.unix_path)})
    assert by_switch.returncode == 0 and by_env.returncode == 0, by_env.stderr
    assert by_switch.stdout == by_env.stdout
    assert f"{'host':<23}: {os.uname().nodename}" in by_switch.stdout


def test_call_runs_any_client_function(xm: Xm) -> None:
    assert xm("call", "domains").stdout.startswith("(Domain-0")
    assert sxp.child_value(sxp.parse(xm("call", "xend_domain", "0").stdout), "name") \
        == "Domain-0"
    assert is_one_error_line(xm("call", "fly", ok=False))


def test_scheduler_knobs_of_the_node(xm: Xm) -> None:
    assert xm("rrobin", "10").stdout == ""
    assert xm("bvt_ctxallow", "5").stdout == ""


# --- domains, end to end ------------------------------------------------------------------

def test_create_from_sxp_file_list_pause_unpause_destroy(xm: Xm, tmp_path: Path) -> None:
    done = xm("create", "-F", str(sxp_file(tmp_path, "vm1")))
    assert done.stdout.startswith("Started domain vm1")
    row = rows(xm)["vm1"]
    assert row[1] == "16"
    domid = row[0]
    port = sxp.child_value(sxp.child(info(xm, "vm1"), "console"), "console_port")
    if port:
        assert done.stdout == f"Started domain vm1, console on port {port}\n"
        assert row[-1] == port

    wait_for(lambda: "p" not in state(xm, "vm1"), what="vm1 running")
    xm("pause", "vm1")
    wait_for(lambda: "p" in state(xm, "vm1"), what="vm1 paused")
    xm("unpause", domid)
    wait_for(lambda: "p" not in state(xm, "vm1"), what="vm1 unpaused")

    assert xm("domid", "vm1").stdout == f"{domid}\n"
    assert xm("domname", domid).stdout == "vm1\n"

    xm("destroy", "vm1")
    wait_for(lambda: gone(xm, "vm1"), what="vm1 gone")


BLOCK_SCRATCH = Path(__file__).resolve().parents[1] / "data" / "block-scratch"


def test_create_the_shipped_examples(xend_home: Callable[..., XendHome]) -> None:
    # Their disk images are the quickstart's to make; here a block script makes them.
    home = xend_home(f"(block-file {BLOCK_SCRATCH})\n")
    home.start()

    def xm(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_xm(home, *args)
        assert (done.returncode, done.stderr) == (0, ""), (args, done.stderr)
        return done

    sim = xm("create", "-F", str(EXAMPLES / "sim-domain.sxp"))
    assert sim.stdout.startswith("Started domain sim1")
    tty = xm("create", "--path", str(EXAMPLES), "ttylinux.xm", "name=tty2", "memory=32")
    assert tty.stdout.splitlines()[0] == f'Using config file "{EXAMPLES / "ttylinux.xm"}".'
    assert tty.stdout.splitlines()[1].startswith("Started domain tty2")
    listed = rows(xm)
    assert listed["sim1"][1] == "64" and listed["tty2"][1] == "32"
    assert "ttylinux" not in listed


def test_create_paused_stays_paused(xm: Xm, tmp_path: Path) -> None:
    xm("create", "-p", "-F", str(sxp_file(tmp_path, "sleepy")))
    assert "p" in state(xm, "sleepy")


def test_create_from_a_python_config_with_assignments(xm: Xm, tmp_path: Path) -> None:
    (tmp_path / "small.py").write_text(f'kernel = "{KERNEL}"\nmemory = 16\nname = "small"\n')
    done = xm("create", "small.py", "name=other", "memory=24", cwd=tmp_path)
    assert done.stdout.splitlines()[0] == 'Using config file "small.py".'
    assert done.stdout.splitlines()[1].startswith("Started domain other")
    assert rows(xm)["other"][1] == "24"
    assert "small" not in rows(xm)

    quiet = xm("create", "-q", "--path", str(tmp_path), "-f", "small.py")
    assert quiet.stdout == ""
    assert "small" in rows(xm)


def test_create_dryrun_prints_the_config_and_creates_nothing(xm: Xm, tmp_path: Path) -> None:
    (tmp_path / "dry").write_text(f'kernel = "{KERNEL}"\nmemory = 16\n')
    done = xm("create", "-n", "--path", str(tmp_path), "dry", "name=dry")
    out = done.stdout.splitlines()
    assert out[0] == f'Using config file "{tmp_path / "dry"}".'
    vm = sxp.parse("\n".join(out[1:]))
    assert sxp.child_value(vm, "name") == "dry"
    assert sxp.child_value(vm, "memory") == "16"
    assert "dry" not in rows(xm)

    sxp_done = xm("create", "-n", "-F", str(sxp_file(tmp_path, "drysxp")))
    assert sxp.child_value(sxp.parse(sxp_done.stdout), "name") == "drysxp"
    assert "drysxp" not in rows(xm)


def test_create_errors_are_one_line(xm: Xm, tmp_path: Path) -> None:
    (tmp_path / "nokernel").write_text("memory = 16\n")
    no_kernel = xm("create", "--path", str(tmp_path), "nokernel", ok=False)
    assert is_one_error_line(no_kernel) and "No kernel specified" in no_kernel.stderr
    missing = xm("create", "--path", str(tmp_path), "absent", ok=False)
    assert is_one_error_line(missing) and "absent" in missing.stderr
    xm("create", "-F", str(sxp_file(tmp_path, "twin")))
    clash = xm("create", "-F", str(sxp_file(tmp_path, "twin")), ok=False)
    assert is_one_error_line(clash) and "twin" in clash.stderr
    assert list(rows(xm)).count("twin") == 1


def test_create_with_console_autoconnect_connects_until_the_keyboard_ends(
        xm: Xm, tmp_path: Path) -> None:
    done = xm("create", "-c", "-F", str(sxp_file(tmp_path, "talky")))  # stdin is /dev/null
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"Started domain talky, console on port \d+", lines[0])
    assert lines[1] == "************ REMOTE CONSOLE: CTRL-] TO QUIT ********"
    assert lines[-1] == "************ REMOTE CONSOLE EXITED *****************"
    assert "talky" in rows(xm)


def test_memory_and_cpu_settings(xm: Xm, tmp_path: Path) -> None:
    xm("create", "-F", str(sxp_file(tmp_path, "mem", memory=32)))
    xm("maxmem", "mem", "48")
    wait_for(lambda: sxp.child_value(info(xm, "mem"), "maxmem") == "48", what="maxmem 48")
    xm("balloon", "mem", "24")
    wait_for(lambda: rows(xm)["mem"][1] == "24", what="balloon to 24 MB")
    xm("pincpu", "mem", "0")
    wait_for(lambda: rows(xm)["mem"][2] == "0", what="pinned to cpu 0")
    for args in (("bvt", "mem", "10", "1", "2", "3", "4"), ("fbvt", "mem", "10", "1", "2", "3"),
                 ("atropos", "mem", "100", "10", "5", "1")):
        assert xm(*args).stdout == ""


def test_shutdown_and_wait(xm: Xm, tmp_path: Path) -> None:
    xm("create", "-F", str(sxp_file(tmp_path, "down")))
    done = xm("shutdown", "-w", "down")
    assert done.stdout == "Domain down terminated\nAll domains terminated\n"
    assert gone(xm, "down")


def test_shutdown_all_and_wait_leaves_domain0(xm: Xm, tmp_path: Path) -> None:
    for name in ("a1", "a2", "a3"):
        xm("create", "-F", str(sxp_file(tmp_path, name)))
    done = xm("shutdown", "-a", "-w")
    lines = done.stdout.splitlines()
    assert sorted(lines[:-1]) == ["Domain a1 terminated", "Domain a2 terminated",
                                  "Domain a3 terminated"]
    assert lines[-1] == "All domains terminated"
    assert list(rows(xm)) == ["Domain-0"]


def test_list_named_domains_in_the_given_order(xm: Xm, tmp_path: Path) -> None:
    for name in ("zeta", "alpha"):
        xm("create", "-F", str(sxp_file(tmp_path, name)))
    names = [line.split()[0] for line in xm("list").stdout.splitlines()[1:]]
    assert names == sorted(names) and {"zeta", "alpha", "Domain-0"} <= set(names)
    chosen = [line.split()[0] for line in xm("list", "zeta", "0").stdout.splitlines()[1:]]
    assert chosen == ["zeta", "Domain-0"]
    assert [sxp.name(v) for v in sxp.parse_all(xm("list", "-l").stdout)] == ["domain"] * 3


def test_bad_input_is_one_error_line(xm: Xm) -> None:
    for args in (("pause", "nosuch"), ("list", "nosuch"), ("domid", "nosuch"),
                 ("shutdown", "nosuch"), ("destroy", "nosuch"), ("maxmem", "0", "lots"),
                 ("shutdown",), ("pincpu", "Domain-0")):
        assert is_one_error_line(xm(*args, ok=False)), args
    assert xm("shutdown", "-w", "-R", "Domain-0", ok=False).stderr \
        == "Error: Can't specify wait and reboot\n"
    assert xm("shutdown", "-H", "-R", "Domain-0", ok=False).stderr \
        == "Error: Can't specify halt and reboot\n"
