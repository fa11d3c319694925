"""Live migration between two xends on the sim, each on a host of its own: two network
namespaces joined by a veth pair (facts §10.3).

The source xend runs in one namespace, the destination (its relocation server on, its
hosts-allow naming the source's address) in the other; the test talks to both over their
Unix sockets and to their consoles from inside their namespaces. A migrated guest runs
on at the destination with its screen and shell; the source keeps no trace. Whatever
breaks a migration — the destination killed mid-way, a peer it does not allow, a name it
already has — leaves the guest running at the source and nothing at the destination.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest

from tests.integration.test_xm import XM
from tests.support import SIM_SHELL, XendHome, netns_usable, new_home, wait_for
from xend_actors import sxp
from xend_actors.client import XendClient

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

SUBNET = "10.231.7"
SOURCE, DESTINATION = f"{SUBNET}.1", f"{SUBNET}.2"


class Host:
    """One test host: a network namespace with a xend in it."""

    def __init__(self, address: str, extra: str = "") -> None:
        self.address = address
        self.ns = f"xm-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.ip("link", "set", "lo", "up")
        self.home: XendHome | None = None
        self.extra = extra

    def ip(self, *args: str) -> None:
        done = subprocess.run(["ip", "-n", self.ns, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        if self.home is None:
            self.home = new_home(self.extra)
            self.home.netns = self.ns
        started = self.home.xend("start")
        assert started.returncode == 0, started.stderr

    @property
    def xend(self) -> XendHome:
        assert self.home is not None
        return self.home

    def client(self, timeout: float = 120) -> XendClient:
        return XendClient(unix_path=self.xend.unix_path, timeout=timeout)

    def post(self, path: str, **fields: str) -> httpx.Response:
        with self.xend.unix_http() as http:
            http.timeout = httpx.Timeout(120)
            return http.post(path, data=fields)

    def names(self) -> list[str]:
        with self.client() as client:
            return list(client.xend_domains())  # type: ignore[arg-type]

    def info(self, dom: str) -> sxp.Value:
        with self.client() as client:
            return client.xend_domain(dom)

    def start_guest(self, name: str) -> int:
        config = ["vm", ["name", name], ["memory", "32"],
                  ["image", ["linux", ["kernel", "/boot/vmlinuz-sim"]]]]
        with self.client() as client:
            info = client.xend_domain_create(config)
            client.xend_domain_unpause(name)
        return int(sxp.child_value(info, "id"))

    def sh(self, dom: str, command: str) -> str:
        """Run ``command`` in ``dom``'s shell through its console, inside the namespace."""
        port = sxp.child_value(sxp.child(self.info(dom), "console"), "console_port")
        done = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", SIM_SHELL,
                               str(port), command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def screen(self, dom: str) -> bytes:
        port = sxp.child_value(sxp.child(self.info(dom), "console"), "console_port")
        with self.client() as client:
            return client.xend_console_log(port).data

    def events(self) -> list[str]:
        return re.findall(r"EVENT> (.*)$", self.xend.logfile.read_text(), re.MULTILINE)

    def sessions(self) -> list[str]:
        folder = self.xend.dbroot / "migrate"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def kill_xend(self) -> None:
        os.kill(int(self.xend.pid_file.read_text().split()[0]), signal.SIGKILL)

    def stop(self) -> None:
        if self.home is not None:
            self.home.xend("stop")
            self.home.kill_simhv()
            shutil.rmtree(self.home.root, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


H = TypeVar("H", bound=Host)


@contextlib.contextmanager
def host_pairs(kind: type[H]) -> Iterator[Callable[..., tuple[H, H]]]:
    """Make a source and a destination host of ``kind``, joined by a veth; the destination
    allows ``allow``. Every host made is stopped at the end."""
    made: list[H] = []

    def make(allow: str = re.escape(SOURCE)) -> tuple[H, H]:
        source = kind(SOURCE)
        made.append(source)
        destination = kind(DESTINATION, "(xend-relocation-server yes)\n"
                                        f"(xend-relocation-address {DESTINATION})\n"
                                        + sxp.show(["xend-relocation-hosts-allow", allow]))
        made.append(destination)
        veth = f"xv{secrets.token_hex(4)}"
        subprocess.run(["ip", "link", "add", f"{veth}a", "netns", source.ns, "type", "veth",
                        "peer", "name", f"{veth}b", "netns", destination.ns], check=True)
        for host, end in ((source, "a"), (destination, "b")):
            host.ip("addr", "add", f"{host.address}/24", "dev", f"{veth}{end}")
            host.ip("link", "set", f"{veth}{end}", "up")
            host.start()
        return source, destination

    try:
        yield make
    finally:
        for host in made:
            host.stop()


@pytest.fixture
def hosts() -> Iterator[Callable[..., tuple[Host, Host]]]:
    with host_pairs(Host) as make:
        yield make


def test_a_live_migration_moves_the_running_guest_with_its_screen(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts()
    old_id = source.start_guest("m1")
    assert source.sh("m1", "echo typed-before-the-migration") == "typed-before-the-migration"

    # Throttled to 100 Mbit/s, so the 32 MiB take about 3 s and the progress bar shows.
    done = subprocess.run([XM, "--unix", str(source.xend.unix_path), "migrate", "-l",
                           "-r", "100", "m1", DESTINATION],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert re.fullmatch(rf"http://{re.escape(DESTINATION)}:8002/xend/domain/\d+", url), url
    assert "MiB/s" in done.stderr and "precopy" in done.stderr, done.stderr

    assert "m1" not in source.names()
    assert source.sessions() == []
    assert not (source.xend.dbroot / "domain" / str(old_id)).exists()
    [ok] = [e for e in source.events() if e.startswith(f"xend.domain.migrate (m1 {old_id} ok")]
    downtime = float(re.search(r"\(downtime ([0-9.]+)\)", ok).group(1))  # type: ignore[union-attr]
    duration = float(re.search(r"\(duration ([0-9.]+)\)", ok).group(1))  # type: ignore[union-attr]
    assert downtime < 2.0 < duration, ok  # the guest ran while its memory went
    print(f"live migration of 32 MiB at 100 Mbit/s: {duration:.3f} s, downtime {downtime:.3f} s")

    assert "m1" in destination.names()
    assert url.endswith("/" + str(sxp.child_value(destination.info("m1"), "id")))
    assert destination.sessions() == []
    wait_for(lambda: b"Restored from a saved state" in destination.screen("m1"),
             what="the migrated guest's screen")
    assert b"typed-before-the-migration" in destination.screen("m1")
    assert destination.sh("m1", "echo alive-over-there") == "alive-over-there"


def test_a_migration_that_is_not_live_suspends_first(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts()
    source.start_guest("m2")
    assert source.sh("m2", "echo before") == "before"
    reply = source.post("/xend/domain/m2", op="migrate", destination=DESTINATION, live="0")
    assert reply.status_code == 200, reply.text
    assert reply.headers["location"] == sxp.parse(reply.text)
    assert "m2" not in source.names()
    assert destination.sh("m2", "echo after") == "after"
    assert b"before" in destination.screen("m2")
    events = source.events()
    assert any(e.startswith("xend.domain.migrate (m2 ") and " begin (migrate " in e
               for e in events)
    assert not any(" precopy" in e for e in events if e.startswith("xend.domain.migrate.progress"))


@pytest.mark.parametrize("live", ["0", "1"])
def test_killing_the_destination_mid_way_leaves_the_guest_running_at_the_source(
        hosts: Callable[..., tuple[Host, Host]], live: str) -> None:
    source, destination = hosts()
    source.start_guest("m3")
    assert source.sh("m3", "echo before") == "before"
    replies: list[httpx.Response] = []
    # 40 Mbit/s: the 32 MiB would take almost 7 s.
    migrating = threading.Thread(target=lambda: replies.append(source.post(
        "/xend/domain/m3", op="migrate", destination=DESTINATION, live=live, resource="40")))
    migrating.start()

    def midway() -> bool:
        sent = [int(n) for n in re.findall(r"migrate\.progress \(m3 \d+ \(progress \(phase \w+\) "
                                           r"\(sent (\d+)\)", "\n".join(source.events()))]
        return bool(sent) and max(sent) > 4 << 20
    wait_for(midway, timeout=30, what="the transfer half-way")
    destination.kill_xend()
    migrating.join(timeout=60)
    [reply] = replies
    assert reply.status_code == 500, reply.text
    assert "migrate failed" in reply.text

    assert "m3" in source.names()
    assert sxp.child_value(source.info("m3"), "state") in ("-b---", "r----")
    assert source.sh("m3", "echo still-here") == "still-here"
    assert source.sessions() == []
    assert any(e.startswith("xend.domain.migrate (m3 ") and " error (migrate " in e
               for e in source.events())

    destination.start()  # the killed xend comes back to find nothing of m3
    assert destination.names() == ["Domain-0"]
    assert destination.sessions() == []


def test_a_peer_the_destination_does_not_allow_is_refused(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts(allow=r"10\.9\.9\.9")
    source.start_guest("m4")
    reply = source.post("/xend/domain/m4", op="migrate", destination=DESTINATION, live="1")
    assert reply.status_code == 403, reply.text
    message = str(sxp.parse(reply.text)[1])
    assert f"{SOURCE} is not allowed to migrate here" in message, message
    assert "m4" in source.names()
    assert source.sh("m4", "echo still-here") == "still-here"
    assert destination.names() == ["Domain-0"]


def test_a_name_the_destination_has_is_refused(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts()
    source.start_guest("m5")
    destination.start_guest("m5")
    reply = source.post("/xend/domain/m5", op="migrate", destination=DESTINATION, live="1")
    assert reply.status_code == 409, reply.text
    assert "vm name clash: m5" in reply.text
    assert source.sh("m5", "echo still-here") == "still-here"
    assert destination.names().count("m5") == 1
    assert source.sessions() == [] and destination.sessions() == []


def test_nobody_listening_is_a_clear_error(hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, _destination = hosts()
    source.start_guest("m6")
    reply = source.post("/xend/domain/m6", op="migrate", destination=f"{DESTINATION}:8009")
    assert reply.status_code == 500, reply.text
    assert "cannot connect to the relocation port" in reply.text
    assert source.sh("m6", "echo still-here") == "still-here"


def test_sessions_a_killed_xend_left_are_undone_when_it_starts_again(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts()
    # The source died with its guest suspended for a migration: the guest runs on.
    domid = source.start_guest("m7")
    assert source.post("/xend/domain/m7", op="shutdown", reason="suspend").status_code == 202
    wait_for(lambda: sxp.child_value(source.info("m7"), "state") == "---s-", what="suspended")
    source.kill_xend()
    (source.xend.dbroot / "migrate" / "3").write_text(
        f"(migrate (id 3) (state begin) (live 1) (resource 0) (src (host a) (domain {domid})) "
        f"(dst (host {DESTINATION})))\n")
    source.start()
    assert source.sessions() == []
    assert source.sh("m7", "echo runs-again") == "runs-again"
    # The destination died with a half-built domain: it is destroyed.
    half = destination.start_guest("m8")
    destination.kill_xend()
    (destination.xend.dbroot / "migrate" / "in-2").write_text(
        f"(migrate (id in-2) (state receive) (live 1) (src (host {SOURCE}) (domain 9)) "
        f"(dst (host b) (domain {half})))\n")
    destination.start()
    assert destination.sessions() == []
    assert destination.names() == ["Domain-0"]
