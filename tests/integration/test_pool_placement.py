"""Placement in a pool (issue 18, Deliver 4): three xends on loopback, members of one
pool on a real etcd, each simulating a host with its own memory (``sim-memory``).

``xm create --pool`` asked of any member lands the domain, running, on the member with
the most free memory and says which; the forwarded create carries the pool's shared
token (the chosen member's audit trail names ``token pool``), and the same request with
a wrong token is refused (401). A domain too big for every member is a clear error
naming its need and the best free figure, and nothing is made anywhere. A member whose
token file others may read does not start, saying why in one line.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd import EtcdCluster
from tests.support.home import XendHome, new_home
from tests.support.processes import wait_for
from tests.support.xend import Xend, run_xm, sim_vm
from xend_actors import sxp

pytestmark = pytest.mark.integration

POOL = "place"
MEMORY = {"m0": 2048, "m1": 6144, "m2": 4096}  # MB each member's sim host has


def member_config(etcd: EtcdCluster, name: str, token_file: Path | None,
                  extra: str = "") -> str:
    token = f"(xend-pool-token-file {token_file})\n" if token_file else ""
    return (f"(xend-pool {POOL})\n(xend-pool-etcd '{etcd.urls}')\n(xend-pool-host {name})\n"
            f"{token}(xend-pool-ttl 4)\n{extra}")


@pytest.fixture(scope="module")
def pool() -> Iterator[tuple[EtcdCluster, dict[str, Xend]]]:
    etcd = EtcdCluster(1)
    homes: list[XendHome] = []
    try:
        token_dir = Path(tempfile.mkdtemp(prefix="xend-pooltoken-"))
        token_file = token_dir / "pool.token"
        for name, memory in MEMORY.items():
            homes.append(new_home(member_config(etcd, name, token_file,
                                                f"(sim-memory {memory})\n")))
        made = homes[0].xend("pool-token", str(token_file))
        assert made.returncode == 0, made.stderr
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        xends = {}
        for name, home in zip(MEMORY, homes, strict=True):
            home.start()
            xends[name] = Xend(home)
        wait_for(lambda: len(etcd.get_prefix(f"/xend-pool/{POOL}/hosts/")) == len(MEMORY), 20,
                 "every member to join")
        yield etcd, xends
        for xend in xends.values():
            xend.close()
    finally:
        for home in homes:
            home.tear_down()
        etcd.close()
        shutil.rmtree(token_dir, ignore_errors=True)


def free_of(etcd: EtcdCluster) -> dict[str, int]:
    return {name.rsplit("/", 1)[1]: json.loads(value)["free_mb"]
            for name, value in etcd.get_prefix(f"/xend-pool/{POOL}/hosts/").items()}


def settled(etcd: EtcdCluster, xends: dict[str, Xend]) -> None:
    """Once every member's entry counts the domains it runs (its room is current too)."""
    def counted() -> bool:
        entries = etcd.get_prefix(f"/xend-pool/{POOL}/hosts/")
        return all(json.loads(entries[f"/xend-pool/{POOL}/hosts/{name}"])["domains"]
                   == len(xend.names()) - 1 for name, xend in xends.items())
    wait_for(counted, 10, "the members' entries to count their domains")


def test_xm_create_in_a_pool_lands_on_the_member_with_the_most_free_memory(
        pool: tuple[EtcdCluster, dict[str, Xend]], tmp_path: Path) -> None:
    etcd, xends = pool
    free = free_of(etcd)
    assert max(free, key=free.__getitem__) == "m1", free
    config = tmp_path / "placed.sxp"
    config.write_text(sxp.show(sim_vm("placed", memory=64)))
    done = run_xm(xends["m0"].home, "create", "--pool", "-F", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Started domain placed on pool member m1, console on "
                                  "port "), done.stdout
    # It runs there, and only there; the member asked has nothing of it.
    assert "placed" in xends["m1"].names()
    assert "p" not in xends["m1"].state("placed")  # unpaused there
    assert "placed" not in xends["m0"].names() and "placed" not in xends["m2"].names()
    # The forwarded create came with the pool's token: the chosen member's audit says so,
    # and whom m0 acted for (xm's token there).
    wait_for(lambda: any(line.startswith("xend.audit (audit (who 'token pool for token tests "
                                         "via m0') (op create) (path /xend/domain/) "
                                         "(status 201)")
                         for line in xends["m1"].events.lines()), 10, "the audit line")
    assert etcd.get_prefix(f"/xend-pool/{POOL}/names/placed") == {
        f"/xend-pool/{POOL}/names/placed": b"m1"}


def test_a_create_placed_on_the_member_asked_is_made_there(
        pool: tuple[EtcdCluster, dict[str, Xend]]) -> None:
    _, xends = pool
    reply = xends["m1"].post("/xend/pool/", op="create",
                             config=sxp.show(sim_vm("here", memory=32)))
    info = Xend.ok(reply, 201)
    assert sxp.child_value(info, "host") == "m1"
    assert sxp.child_value(info, "name") == "here"
    assert "here" in xends["m1"].names()
    assert "p" in xends["m1"].state("here")  # not asked to unpause: paused, as a create


def test_a_domain_too_big_for_every_member_is_a_clear_error(
        pool: tuple[EtcdCluster, dict[str, Xend]], tmp_path: Path) -> None:
    etcd, xends = pool
    settled(etcd, xends)
    best = max(free_of(etcd).values())
    config = tmp_path / "big.sxp"
    config.write_text(sxp.show(sim_vm("big", memory=100000)))
    done = run_xm(xends["m2"].home, "create", "--pool", "-F", str(config))
    assert done.returncode == 1
    assert done.stderr == (f"Error: no pool member has room for domain big: it needs "
                           f"100000 MB, the most free is {best} MB (on m1)\n")
    assert all("big" not in xend.names() for xend in xends.values())
    assert etcd.get_prefix(f"/xend-pool/{POOL}/names/big") == {}


def test_the_pool_token_is_an_admin_and_a_wrong_one_is_refused(
        pool: tuple[EtcdCluster, dict[str, Xend]]) -> None:
    _, xends = pool
    home = xends["m2"].home
    token = Path(home.config_file.read_text().split("(xend-pool-token-file ")[1].split(")")[0])
    secret = token.read_text().strip()
    config = sxp.show(sim_vm("tokened"))
    with home.http(token=secret) as http:
        assert http.get("/xend/domain/").status_code == 200
    with home.http(token=secret[:-4] + "AAAA") as http:
        refused = http.post("/xend/domain/", data={"op": "create", "config": config})
    assert refused.status_code == 401, refused.text
    assert "tokened" not in xends["m2"].names()


def test_a_member_whose_token_file_others_may_read_does_not_start(
        pool: tuple[EtcdCluster, dict[str, Xend]], tmp_path: Path) -> None:
    etcd, _ = pool
    token_file = tmp_path / "loose.token"
    token_file.write_text("pool." + "x" * 43 + "\n")
    os.chmod(token_file, 0o644)
    home = new_home(member_config(etcd, "loose", token_file))
    try:
        started = home.xend("start")
        assert started.returncode == 1
        assert started.stderr == (f"Error: xend-pool-token-file {token_file}: group or others "
                                  "may use it (mode 0644); chmod 600 it\n")
        assert f"/xend-pool/{POOL}/hosts/loose" not in etcd.get_prefix(f"/xend-pool/{POOL}/hosts/")
    finally:
        home.tear_down()


def test_a_pool_migration_asked_of_another_member_is_asked_of_the_domain_s(
        pool: tuple[EtcdCluster, dict[str, Xend]]) -> None:
    """m0 asks m1, which runs the domain (its claim says so); m1 has nowhere to move it
    (no member here runs a relocation server) and says so, through m0."""
    _, xends = pool
    xends["m1"].create(sim_vm("elsewhere"))
    refused = xends["m0"].post("/xend/pool/", op="migrate", dom="elsewhere", live="1")
    assert Xend.error(refused, 409) == ("pool member m1: no other pool member takes "
                                        "migrations (a relocation server) to move domain "
                                        "elsewhere to")
    wait_for(lambda: any(line.startswith("xend.audit (audit (who 'token pool for uid 0 via "
                                         "m0') (op migrate) (path /xend/pool/) (status 409)")
                         for line in xends["m1"].events.lines()), 10, "m1's audit line")
    assert Xend.error(xends["m0"].post("/xend/pool/", op="migrate", dom="nowhere"), 404) \
        == "invalid domain:nowhere: no domain has that name or id"


def test_a_create_forwarded_over_https_goes_only_to_the_certificate_registered(
        pool: tuple[EtcdCluster, dict[str, Xend]]) -> None:
    """A member serving HTTPS (its self-signed certificate) registers the certificate's
    fingerprint; a create placed on it goes over HTTPS, and only while the certificate
    presented is that one: with another fingerprint in its entry nothing is sent."""
    etcd, xends = pool
    token_file = xends["m0"].home.config_file.read_text().split(
        "(xend-pool-token-file ")[1].split(")")[0]
    home = new_home(member_config(etcd, "t3", Path(token_file),
                                  "(sim-memory 16384)\n(xend-tls yes)\n"))
    key = f"/xend-pool/{POOL}/hosts/t3"
    try:
        home.start()
        wait_for(lambda: key in etcd.get_prefix(key), 20, "t3 to join")
        entry = json.loads(etcd.get_prefix(key)[key])
        assert entry["api"] == f"https://127.0.0.1:{home.http_port}"
        assert len(entry["fingerprint"]) == 95, entry
        info = Xend.ok(xends["m0"].post("/xend/pool/", op="create",
                                        config=sxp.show(sim_vm("secure")), unpause="1"), 201)
        assert sxp.child_value(info, "host") == "t3"
        t3 = Xend(home)
        assert "secure" in t3.names() and "p" not in t3.state("secure")

        # An entry naming t3's address with another certificate (an impostor's, as far as
        # the pool knows): a create placed there is not sent.
        impostor = f"/xend-pool/{POOL}/hosts/imp"
        lease = etcd.call("/v3/lease/grant", {"TTL": 60})["ID"]
        forged = {**entry, "host": "imp", "free_mb": 999999,
                  "fingerprint": ":".join(["AB"] * 32)}
        etcd.call("/v3/kv/put", {
            "key": base64.b64encode(impostor.encode()).decode(), "lease": lease,
            "value": base64.b64encode(json.dumps(forged).encode()).decode()})
        reply = xends["m0"].post("/xend/pool/", op="create", config=sxp.show(sim_vm("pinned")))
        etcd.call("/v3/kv/lease/revoke", {"ID": lease})
        message = Xend.error(reply, 502)
        assert message == (f"pool member imp (https://127.0.0.1:{home.http_port}) presented a "
                           f"certificate ({entry['fingerprint']}) that is not the one it "
                           f"registered ({forged['fingerprint']}): not sent"), message
        assert "pinned" not in t3.names()
        t3.close()
    finally:
        home.tear_down()
    wait_for(lambda: key not in etcd.get_prefix(key), 10, "t3 to leave")


def test_a_member_without_the_pool_token_places_nothing_elsewhere(
        pool: tuple[EtcdCluster, dict[str, Xend]]) -> None:
    etcd, xends = pool
    home = new_home(member_config(etcd, "bare", None, "(sim-memory 1024)\n"))
    try:
        home.start()
        key = f"/xend-pool/{POOL}/hosts/bare"
        wait_for(lambda: key in etcd.get_prefix(key), 20, "bare to join")
        bare = Xend(home)
        reply = bare.post("/xend/pool/", op="create", config=sxp.show(sim_vm("untold")))
        assert Xend.error(reply, 503) == ("this member has no pool token "
                                          "(xend-pool-token-file): it cannot forward to "
                                          "another member")
        assert all("untold" not in xend.names() for xend in [bare, *xends.values()])
        bare.close()
    finally:
        home.tear_down()


def test_a_chosen_member_that_does_not_answer_is_a_502_naming_it(
        pool: tuple[EtcdCluster, dict[str, Xend]]) -> None:
    """Killed, m1 stays in the pool until its lease runs out: a create placed on it
    meanwhile is refused naming it, and made nowhere."""
    _, xends = pool
    m1 = xends["m1"]
    m1.home.kill9()
    try:
        reply = xends["m0"].post("/xend/pool/", op="create", config=sxp.show(sim_vm("lost")))
        message = Xend.error(reply, 502)
        assert message.startswith(f"pool member m1 (http://127.0.0.1:{m1.home.http_port}) did "
                                  "not answer: "), message
        assert "lost" not in xends["m0"].names() and "lost" not in xends["m2"].names()
    finally:
        m1.start()
    assert "lost" not in m1.names()


def test_a_xend_on_its_own_says_it_is_in_no_pool(tmp_path: Path) -> None:
    home = new_home()
    try:
        home.start()
        config = tmp_path / "alone.sxp"
        config.write_text(sxp.show(sim_vm("alone")))
        done = run_xm(home, "create", "--pool", "-F", str(config))
        assert (done.returncode, done.stderr) == (
            1, "Error: this xend is not a member of a pool (xend-pool)\n")
        done = run_xm(home, "migrate", "--pool", "alone")
        assert (done.returncode, done.stderr) == (
            1, "Error: this xend is not a member of a pool (xend-pool)\n")
        done = run_xm(home, "migrate", "alone")
        assert (done.returncode, done.stderr) == (
            1, "Error: Give HOST, or --pool to let the pool choose (not both)\n")
    finally:
        home.tear_down()
