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

import re
import subprocess
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.hosts import DESTINATION, SOURCE, Host, HostPairs
from tests.support.netns import netns_usable
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import XM
from xend_actors import sxp

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

@pytest.fixture(scope="module")
def host_pairs(reaper: Reaper) -> Iterator[HostPairs]:
    pairs = HostPairs(Host, reaper)
    yield pairs
    pairs.close()


@pytest.fixture
def hosts(host_pairs: HostPairs) -> Iterator[Callable[..., tuple[Host, Host]]]:
    """The module's pair of hosts: ``hosts(allow=...)`` → (source, destination)."""
    yield host_pairs.take
    host_pairs.give_back()


def test_a_live_migration_moves_the_running_guest_with_its_screen(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts()
    old_id = source.start_guest("m1")
    assert source.sh("m1", "echo typed-before-the-migration") == "typed-before-the-migration"

    # Throttled to 100 Mbit/s, so the 32 MiB take about 3 s and the progress bar shows.
    done = subprocess.run([XM, "--unix", str(source.home.unix_path), "migrate", "-l",
                           "-r", "100", "m1", DESTINATION],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert re.fullmatch(rf"http://{re.escape(DESTINATION)}:8002/xend/domain/\d+", url), url
    assert "MiB/s" in done.stderr and "precopy" in done.stderr, done.stderr

    assert "m1" not in source.names()
    assert source.sessions() == []
    assert not (source.home.dbroot / "domain" / str(old_id)).exists()
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
    (source.home.dbroot / "migrate" / "3").write_text(
        f"(migrate (id 3) (state begin) (live 1) (resource 0) (src (host a) (domain {domid})) "
        f"(dst (host {DESTINATION})))\n")
    source.start()
    assert source.sessions() == []
    assert source.sh("m7", "echo runs-again") == "runs-again"
    # The destination died with a half-built domain: it is destroyed.
    half = destination.start_guest("m8")
    destination.kill_xend()
    (destination.home.dbroot / "migrate" / "in-2").write_text(
        f"(migrate (id in-2) (state receive) (live 1) (src (host {SOURCE}) (domain 9)) "
        f"(dst (host b) (domain {half})))\n")
    destination.start()
    assert destination.sessions() == []
    assert destination.names() == ["Domain-0"]
