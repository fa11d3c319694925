"""Live migration between two xends on the sim, each on a host of its own: two network
namespaces joined by a veth pair (facts §10.3).

The source xend runs in one namespace, the destination (its relocation server on, its
hosts-allow naming the source's address) in the other; they speak mutual TLS, each with
a certificate for its address from one test CA, unless a test asks for plain TCP
(``(xend-relocation-tls no)``). The test talks to both over their Unix sockets and to
their consoles from inside their namespaces. A migrated guest runs on at the
destination with its screen and shell; the source keeps no trace. Whatever breaks a
migration — the destination killed mid-way, a peer it does not allow (by its
certificate's CA or names), a destination whose certificate is not for the host dialed,
a name it already has — leaves the guest running at the source and nothing at the
destination. A relocation server without certificates does not start, a source without
them does not migrate, and a TLS handshake that never finishes holds up nobody.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts import DESTINATION, SOURCE, Host, HostPairs
from tests.support.home import XendHome
from tests.support.netns import netns_usable
from tests.support.pki import Authority, Issued
from tests.support.ports import free_port
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import XM, Xend
from xend_actors import sxp
from xend_actors.transfer import xfr
from xend_actors.transfer.relocation import MAX_CONNECTIONS
from xend_actors.transfer.xfr import tls

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

@pytest.fixture(scope="module")
def host_pairs(reaper: Reaper) -> Iterator[HostPairs]:
    pairs = HostPairs(Host, reaper)
    yield pairs
    pairs.close()


@pytest.fixture
def hosts(host_pairs: HostPairs) -> Iterator[Callable[..., tuple[Host, Host]]]:
    """The module's pair of hosts: ``hosts(allow=..., tls=...)`` → (source, destination)."""
    yield host_pairs.take
    host_pairs.give_back()


@pytest.fixture
def pki(host_pairs: HostPairs) -> Authority:
    """The CA whose certificates the module's hosts present."""
    return host_pairs.pki


def tls_of(host: Host) -> Issued:
    assert host.tls is not None, "a host of a TLS pair"
    return host.tls


def refused(source: Host, destination: Host, name: str, status: int) -> str:
    """The error of a migration of running guest ``name`` that must fail with ``status``,
    once the guest is seen to run on at the source and nothing of it at the destination."""
    reply = source.post(f"/xend/domain/{name}", op="migrate", destination=DESTINATION,
                        live="1")
    assert reply.status_code == status, reply.text
    assert name in source.names()
    assert source.sh(name, "echo still-here") == "still-here"
    assert source.sessions() == []
    assert destination.names() == ["Domain-0"]
    assert destination.sessions() == []
    return str(sxp.parse(reply.text)[1])


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
    assert reply.status_code == 502, reply.text  # the peer vanished: a bad gateway
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
    message = refused(source, destination, "m4", 403)
    assert f"{SOURCE} is not allowed to migrate here by xend-relocation-hosts-allow: " \
           f"its certificate names {SOURCE}, " in message, message


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
    assert reply.status_code == 502, reply.text
    assert "cannot connect to the relocation port" in reply.text
    assert source.sh("m6", "echo still-here") == "still-here"


def restarted_with_record(host: Host, key: str, record: str) -> None:
    """``host``'s xend killed, the migration ``record`` left in its store as ``key``, and
    started again: the session is put right at the start, and none is left."""
    host.kill_xend()
    (host.home.dbroot / "migrate" / key).write_text(record + "\n")
    host.start()
    assert host.sessions() == []


def test_sessions_a_killed_xend_left_are_undone_when_it_starts_again(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts()
    # The source died with its guest suspended for a migration: the guest runs on.
    domid = source.start_guest("m7")
    assert source.post("/xend/domain/m7", op="shutdown", reason="suspend").status_code == 202
    wait_for(lambda: sxp.child_value(source.info("m7"), "state") == "---s-", what="suspended")
    restarted_with_record(source, "3", f"(migrate (id 3) (state begin) (live 1) (resource 0) "
                          f"(src (host a) (domain {domid})) (dst (host {DESTINATION})))")
    assert source.sh("m7", "echo runs-again") == "runs-again"
    # The destination died with a half-built domain: it is destroyed.
    half = destination.start_guest("m8")
    restarted_with_record(destination, "in-2", f"(migrate (id in-2) (state receive) (live 1) "
                          f"(src (host {SOURCE}) (domain 9)) (dst (host b) (domain {half})))")
    assert destination.names() == ["Domain-0"]
    # The source died after its reply, before it tore down its copy (the guest runs at
    # the destination): the next start finishes the teardown.
    left = source.start_guest("m9")
    restarted_with_record(source, "4", f"(migrate (id 4) (state commit) (live 1) (resource 0) "
                          f"(src (host a) (domain {left})) (dst (host {DESTINATION}) (domain 7)))")
    assert "m9" not in source.names() and "m7" in source.names()



def test_a_migration_cut_off_after_its_whole_state_went_keeps_the_guest_paused(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    """A stream driver's migration records itself committing before the end of the
    stream goes; from then on the destination may run the guest. A source xend killed
    before the destination's answer may not run it again, nor destroy the one copy
    there may be: it stays paused. Killed after the answer (the new id recorded), the
    guest runs at the destination: the source's copy is destroyed."""
    source, _destination = hosts()
    doubt = source.start_guest("m11")
    gone = source.start_guest("m12")
    for name in ("m11", "m12"):
        assert source.post(f"/xend/domain/{name}", op="pause").status_code == 200
    source.kill_xend()
    for key, domid, dst in (("5", doubt, ""), ("6", gone, " (domain 7)")):
        (source.home.dbroot / "migrate" / key).write_text(
            f"(migrate (id {key}) (state commit) (live 1) (resource 0) (paused 0) "
            f"(src (host a) (domain {domid})) (dst (host {DESTINATION}){dst}))\n")
    source.start()
    assert source.sessions() == []
    assert "m12" not in source.names()
    assert sxp.child_value(source.info("m11"), "state") == "--p--"
    assert re.search(rf"Domain {doubt} stays paused: its migration to {re.escape(DESTINATION)} "
                     "was cut off once all of its state had gone",
                     source.home.logfile.read_text())


# --- mutual TLS ------------------------------------------------------------------------


def test_a_source_whose_certificate_another_ca_signed_is_refused(
        hosts: Callable[..., tuple[Host, Host]], tmp_path: Path) -> None:
    source, destination = hosts()
    source.start_guest("t1")
    stranger = Authority(tmp_path, "another CA").issue("stranger", ips=(SOURCE,))
    with tls_of(source).replaced_by(stranger):
        message = refused(source, destination, "t1", 403)
    assert message == (f"migrate failed: TLS with relocation peer {DESTINATION}:8002 failed: "
                       "refused by the peer (tlsv1 alert unknown ca)")
    assert re.search(rf"Migration in from {re.escape(SOURCE)} failed: the TLS handshake "
                     "failed: certificate verify failed: unable to get local issuer "
                     "certificate", destination.home.logfile.read_text())
    # The same source with its own certificate back migrates.
    assert source.post("/xend/domain/t1", op="migrate", destination=DESTINATION,
                       live="0").status_code == 200
    assert destination.sh("t1", "echo arrived") == "arrived"


def test_a_destination_whose_certificate_another_ca_signed_is_refused(
        hosts: Callable[..., tuple[Host, Host]], tmp_path: Path) -> None:
    source, destination = hosts()
    source.start_guest("t2")
    impostor = Authority(tmp_path, "another CA").issue("impostor", ips=(DESTINATION,))
    with tls_of(destination).replaced_by(impostor):
        message = refused(source, destination, "t2", 403)
    assert message == (f"migrate failed: the TLS handshake with the relocation port "
                       f"{DESTINATION}:8002 failed: certificate verify failed: unable to "
                       "get local issuer certificate")


def test_a_destination_whose_certificate_names_another_host_is_refused(
        hosts: Callable[..., tuple[Host, Host]], pki: Authority) -> None:
    source, destination = hosts()
    source.start_guest("t3")
    elsewhere = pki.issue("elsewhere", ips=("10.231.7.9",), dns=("elsewhere.example",))
    with tls_of(destination).replaced_by(elsewhere):
        message = refused(source, destination, "t3", 403)
    assert message == (f"migrate failed: the TLS handshake with the relocation port "
                       f"{DESTINATION}:8002 failed: certificate verify failed: IP address "
                       f"mismatch, certificate is not valid for '{DESTINATION}'.")


def test_the_names_on_the_certificate_count_not_the_address(
        hosts: Callable[..., tuple[Host, Host]], pki: Authority) -> None:
    # The destination allows the source's address; the certificate names another host.
    source, destination = hosts()
    source.start_guest("t4")
    other = pki.issue("other", dns=("other.example",))
    with tls_of(source).replaced_by(other):
        message = refused(source, destination, "t4", 403)
    assert message == (f"migrate failed: relocation peer {DESTINATION}:8002 refused the "
                       f"connection: {SOURCE} is not allowed to migrate here by "
                       "xend-relocation-hosts-allow: its certificate names other.example, other")


def test_plain_tcp_still_migrates_with_relocation_tls_no(
        hosts: Callable[..., tuple[Host, Host]]) -> None:
    source, destination = hosts(tls=False)
    source.start_guest("t5")
    assert source.sh("t5", "echo before") == "before"
    reply = source.post("/xend/domain/t5", op="migrate", destination=DESTINATION, live="1")
    assert reply.status_code == 200, reply.text
    assert "t5" not in source.names()
    assert destination.sh("t5", "echo after") == "after"
    assert "presents a certificate" not in destination.home.logfile.read_text()


def test_a_relocation_server_without_certificates_does_not_start(
        xend_home: Callable[..., XendHome], pki: Authority) -> None:
    server = ("(xend-relocation-server yes)\n(xend-relocation-address 127.0.0.1)\n"
              f"(xend-relocation-port {free_port()})\n")
    home = xend_home(server)
    started = home.xend("start")
    assert started.returncode == 1
    assert ("a relocation server (xend-relocation-server yes) needs mutual TLS between xends, "
            "and the config does not say (xend-relocation-tls-cert PATH) "
            "(xend-relocation-tls-key PATH) (xend-relocation-tls-ca PATH); give them, or say "
            "(xend-relocation-tls no) for plain TCP") in started.stderr
    assert home.xend("status").returncode == 3
    issued = pki.issue("half", ips=("127.0.0.1",))
    half = xend_home(f"(xend-relocation-tls-cert {issued.cert})\n" + server)
    started = half.xend("start")
    assert started.returncode == 1
    assert ("the config does not say (xend-relocation-tls-key PATH) "
            "(xend-relocation-tls-ca PATH);") in started.stderr
    broken = xend_home(f"(xend-relocation-tls-cert {issued.key})\n(xend-relocation-tls-key "
                       f"{issued.key})\n(xend-relocation-tls-ca {issued.ca})\n" + server)
    started = broken.xend("start")
    assert started.returncode == 1
    assert f"xend-relocation-tls-cert {issued.key} with -key {issued.key}: " in started.stderr
    plain = xend_home("(xend-relocation-tls no)\n" + server)
    plain.start()


def test_a_source_without_certificates_does_not_migrate(
        fresh_xend: Callable[..., Xend]) -> None:
    xend = fresh_xend()
    xend.start_sim("t6")
    message = xend.error(xend.post("/xend/domain/t6", op="migrate",
                                   destination="127.0.0.1:1"), 500)
    assert message == (
        "migrate failed: migrating a domain to another xend needs mutual TLS between xends, "
        "and the config does not say (xend-relocation-tls-cert PATH) "
        "(xend-relocation-tls-key PATH) (xend-relocation-tls-ca PATH); give them, or say "
        "(xend-relocation-tls no) for plain TCP")
    assert sxp.child_value(xend.info("t6"), "state") in ("-b---", "r----")
    assert xend.sessions() == []


def test_a_handshake_that_never_finishes_holds_up_nobody(
        xend_home: Callable[..., XendHome], pki: Authority) -> None:
    port = free_port()
    issued = pki.issue("local", ips=("127.0.0.1",))
    home = xend_home(issued.relocation_config() + "(xend-relocation-server yes)\n"
                     f"(xend-relocation-address 127.0.0.1)\n(xend-relocation-port {port})\n")
    home.start()
    files = tls.Files(issued.cert, issued.key, issued.ca)
    with contextlib.ExitStack() as stack:
        silent = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        garbage = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
        began = time.monotonic()
        # Meanwhile a peer that does speak TLS is served at once.
        peer = xfr.Channel(tls.connect(files, "127.0.0.1", port, 10), "xend", 10)
        stack.callback(peer.close)
        peer.send(xfr.Hello())
        peer.expect_ok("the connection")
        assert time.monotonic() - began < tls.HANDSHAKE_TIMEOUT
        wait_closed(garbage)  # told at once (an alert), then closed
        assert time.monotonic() - began < tls.HANDSHAKE_TIMEOUT
        wait_closed(silent)  # once the handshake's time is up
        assert tls.HANDSHAKE_TIMEOUT - 1 < time.monotonic() - began < tls.HANDSHAKE_TIMEOUT + 5

    def failures() -> list[str]:
        return sorted(re.findall(r"Migration in from 127\.0\.0\.1 failed: the TLS handshake "
                                 r"failed: (.*)", home.logfile.read_text()))
    wait_for(lambda: len(failures()) == 2, timeout=10, what="both handshakes logged")
    assert failures() == ["http request", "no answer in time"]
    # None of them is counted any more: twice as many peers as may be served at once,
    # one after the other, are each served.
    for _ in range(2 * MAX_CONNECTIONS):
        with contextlib.closing(xfr.Channel(tls.connect(files, "127.0.0.1", port, 10),
                                            "xend", 10)) as peer:
            peer.send(xfr.Hello())
            peer.expect_ok("the connection")
    assert home.alive()


def wait_closed(sock: socket.socket) -> None:
    """Returns once the other end closed ``sock``, whatever it sent before."""
    while sock.recv(4096):
        pass
