"""The fencing watchdog (xend-fence) as a pool member uses it: a real watchdog process,
started by xend's client ``FenceWatchdog``, and a real xend-simhv whose domains it
destroys when its deadline passes; no xend runs (the watchdog is for when none does)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for, wait_gone
from tests.support.xend import Xend, sim_vm
from xend_actors.config import XendConfig, load_config
from xend_actors.hypervisor.sim.driver import SimDriver
from xend_actors.hypervisor.sim.launch import ensure_simhv
from xend_actors.pool.watchdog import SWEEP_PERIOD
from xend_actors.pool.watchdog_client import FenceWatchdog, take_fenced, watchdog_pid
from xend_actors.pool.watchdog_protocol import MAX_LINE, log_path, socket_path

pytestmark = pytest.mark.integration


@dataclass
class Host:
    """A xend's folder with its xend-simhv running and no xend: the domains stay."""

    home: XendHome
    config: XendConfig
    driver: SimDriver

    def names(self) -> set[str]:
        return {d.name for d in self.driver.list_domains() if d.domid != 0}

    def make(self, *names: str) -> None:
        for name in names:
            self.driver.create(name, 64)

    def client(self) -> FenceWatchdog:
        return FenceWatchdog(self.config)

    def status(self) -> dict:
        return json.loads(ask(self, b"status\n"))

    def watchdog_log(self) -> str:
        return log_path(self.config).read_text()


def ask(host: Host, lines: bytes) -> str:
    """What the watchdog answers to ``lines`` on a connection of its own, until it is
    done with them (the answer line, or the connection closed)."""
    seen = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path(host.config)))
        try:
            sock.sendall(lines)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it took all of them: its answer is read still
        try:
            while not seen.endswith(b"\n") and (data := sock.recv(65536)):
                seen += data
        except ConnectionResetError:
            pass
    return seen.decode(errors="replace")


@pytest.fixture
def host(xend_home: Callable[..., XendHome]) -> Iterator[Host]:
    home = xend_home()
    config = load_config(home.config_file)
    ensure_simhv(home.simhv_socket, memory_mb=4096, cpus=2,
                 log_file=home.logfile.parent / "xend-simhv.log",
                 pid_file=home.run_dir / "simhv.pid")
    driver = SimDriver(home.simhv_socket)
    try:
        yield Host(home, config, driver)
    finally:
        driver.close()  # the folder's tear-down stops the watchdog and the simhv


def test_guarded_domains_are_destroyed_when_the_deadline_passes_and_the_others_kept(
    host: Host,
) -> None:
    host.make("ha1", "ha2", "plain")
    watchdog = host.client()
    watchdog.guard("ha1")
    watchdog.guard("ha2")
    watchdog.guard("never-made")  # a claim whose domain was not made: nothing to do
    watchdog.deadline(1.5)
    set_at = time.monotonic()
    watchdog.close()  # as a xend killed: nobody extends the deadline
    wait_for(lambda: host.names() == {"plain"}, 15, "the guarded domains fenced")
    assert time.monotonic() - set_at >= 1.5  # and not before the deadline
    records = []
    wait_for(lambda: records.extend(take_fenced(host.config.run_dir)) or records, 10,
             "the record of what was fenced")  # written just after the destroys
    [record] = records
    assert sorted(name for name, _ in record.domains) == ["ha1", "ha2"]
    assert abs(record.time - time.time()) < 15
    assert take_fenced(host.config.run_dir) == []  # taken once
    said = host.watchdog_log()
    assert "Fenced domain ha1" in said and "Fenced domain ha2" in said
    assert "plain" not in said
    status = host.status()
    assert status["fenced"] == 2 and status["guarded"] == ["ha1", "ha2", "never-made"]


def test_a_deadline_extended_in_time_fences_nothing_and_one_left_to_pass_does(
    host: Host,
) -> None:
    host.make("ha")
    watchdog = host.client()
    watchdog.guard("ha")
    until = time.monotonic() + 4
    while time.monotonic() < until:  # renewals each 0.3 s, each giving 1 s more
        watchdog.deadline(1.0)
        time.sleep(0.3)
    assert host.names() == {"ha"}
    assert "Fenced" not in host.watchdog_log()
    wait_for(lambda: host.names() == set(), 10, "fenced once the renewals stopped")


def test_unguarded_and_disarmed_names_are_not_fenced(host: Host) -> None:
    host.make("gone-for-good", "kept")
    watchdog = host.client()
    watchdog.guard("gone-for-good")
    watchdog.guard("kept")
    watchdog.unguard("gone-for-good")  # destroyed for good: a new one of that name is not ours
    watchdog.disarm()  # left the pool
    watchdog.deadline(0.2)
    time.sleep(1.5)
    assert host.names() == {"gone-for-good", "kept"}
    assert host.status()["guarded"] == []


def test_a_watchdog_killed_is_started_again_and_told_everything_by_its_client(
    host: Host,
) -> None:
    host.make("ha", "other")
    watchdog = host.client()
    watchdog.guard("ha")
    watchdog.deadline(60)
    first = watchdog_pid(host.config)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first, 10)
    watchdog.deadline(1.0)  # the next renewal finds it gone
    second = watchdog_pid(host.config)
    assert second not in (None, first)
    assert host.status()["guarded"] == ["ha"]
    wait_for(lambda: host.names() == {"other"}, 10, "fenced by the new watchdog")


def test_a_new_xend_finds_the_running_watchdog_which_keeps_the_old_ones_guards(
    host: Host,
) -> None:
    host.make("old-ha", "new-ha")
    dead = host.client()
    dead.guard("old-ha")
    dead.deadline(2.5)
    dead.close()  # the xend that said so is gone (killed, or stopped)
    pid = watchdog_pid(host.config)
    again = host.client()
    again.start()
    assert watchdog_pid(host.config) == pid  # no second watchdog
    again.guard("new-ha")  # before its join: only adds
    assert host.status()["guarded"] == ["new-ha", "old-ha"]
    # It does not renew in time (its etcd is away): the dead xend's deadline holds.
    wait_for(lambda: host.names() == set(), 10, "both fenced at the old deadline")


def test_a_xend_that_comes_back_in_time_keeps_its_domains_and_replaces_the_set(
    host: Host,
) -> None:
    host.make("ha", "moved")
    dead = host.client()
    dead.replace(["ha", "moved"])
    dead.deadline(2.0)
    dead.close()
    again = host.client()
    again.replace(["ha"])  # after its reconcile: "moved" runs elsewhere now, not ours
    again.deadline(30)  # its lease renewed
    assert host.status()["guarded"] == ["ha"]
    time.sleep(3)
    assert host.names() == {"ha", "moved"}


def test_a_hung_xend_that_wakes_cannot_keep_a_guarded_domain_past_the_deadline(
    host: Host,
) -> None:
    host.make("ha")
    watchdog = host.client()
    watchdog.guard("ha")
    watchdog.deadline(0.5)
    wait_for(lambda: host.names() == set(), 10, "fenced")
    host.make("ha")  # a restart rule of the woken xend brings it back, lease or not
    wait_for(lambda: host.names() == set(), 10, "fenced again")
    watchdog.deadline(30)  # renewed at last: armed again
    host.make("ha")
    time.sleep(2)
    assert host.names() == {"ha"}


def test_long_lines_and_garbage_are_refused_and_change_nothing(host: Host) -> None:
    host.make("ha")
    watchdog = host.client()
    watchdog.guard("ha")
    watchdog.deadline(30)
    before = host.status()
    attempts = {
        b"guard " + b"x" * (MAX_LINE * 4) + b"\n": "at most",
        b"x" * 100_000: "at most",  # no newline at all
        b"frobnicate\n": "unknown command",
        b"guard a b\n": "one domain name",
        b"guard \xff\xfe\n": "ASCII",
        b"deadline 1e9\n": "deadline takes",
        b"deadline -5\n": "deadline takes",
        b"deadline nan\n": "deadline takes",
        b"begin\nguard evil\n" + b"\x00" * 10: "",  # cut off before its commit
        b"commit\n": "commit without begin",
        b"unguard ha\ndisarm now\n": "disarm takes nothing",
    }
    for lines, expected in attempts.items():
        said = ask(host, lines)
        assert expected in said, (lines[:40], said)
        if expected:
            assert said.startswith("error ")
    after = host.status()
    # Only the unguard before the bad line counted.
    assert after["guarded"] == [] and before["guarded"] == ["ha"]
    assert after["pid"] == before["pid"]
    assert 25 < after["deadline_in"] <= before["deadline_in"]
    assert host.names() == {"ha"}
    assert "Refused uid 0" in host.watchdog_log()


# Run as the stranger: connect to the socket, try to disarm, print what comes back.
ATTEMPT = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print(f"connect: {type(error).__name__}")
    sys.exit()
try:
    sock.sendall(b"disarm\nfence\n")
except OSError as error:
    print(f"send: {type(error).__name__}")
seen = b""
try:
    while data := sock.recv(4096):
        seen += data
except ConnectionResetError:
    pass
print(seen.decode().strip())
"""


@pytest.fixture
def stranger() -> Iterator[str]:
    """A user of this host who is not root, made for the test and removed after it."""
    name = f"xfence-{os.urandom(4).hex()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


def attempt_as(user: str, host: Host) -> str:
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    done = subprocess.run(["runuser", "-u", user, "--", python, "-c", ATTEMPT,
                           str(socket_path(host.config))],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_only_root_is_served(host: Host, stranger: str) -> None:
    host.make("ha")
    watchdog = host.client()
    watchdog.guard("ha")
    watchdog.deadline(60)
    path = socket_path(host.config)
    assert path.stat().st_mode & 0o777 == 0o600
    assert attempt_as(stranger, host) == "connect: PermissionError"
    for folder in (host.home.root, host.home.run_dir):
        folder.chmod(0o711)
    path.chmod(0o666)  # a mode that lets him in: the peer's uid still does not
    uid = int(subprocess.run(["id", "-u", stranger], capture_output=True, text=True,
                             check=True).stdout)
    said = attempt_as(stranger, host).splitlines()  # its send may come after the refusal
    assert said[-1] == f"error the fencing watchdog serves only root, not uid {uid}", said
    assert f"Refused uid {uid}" in host.watchdog_log()
    status = host.status()
    assert status["guarded"] == ["ha"] and status["deadline_in"] > 50
    assert host.names() == {"ha"}


def test_a_xend_out_of_any_pool_disarms_the_watchdog_a_pool_member_left(
    host: Host,
) -> None:
    member = host.client()
    member.guard("web")
    member.fence_now()  # the member stopped cleanly: fenced, and it keeps looking
    member.close()
    host.make("web")
    wait_for(lambda: host.names() == set(), 10, "a guarded name fenced while passed")
    host.home.start()  # the same host, its config without (xend-pool)
    xend = Xend(host.home)
    try:
        xend.create(sim_vm("web"), unpause=True)
        time.sleep(2 * SWEEP_PERIOD)
        assert "web" in xend.names()
        assert host.status()["guarded"] == [] and host.status()["deadline_in"] is None
        assert "Disarmed the fencing watchdog a pool member left" in \
            host.home.logfile.read_text()
    finally:
        xend.close()
