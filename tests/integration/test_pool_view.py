"""The pool as one view (issue 18, "One view"): ``GET /xend/pool/`` on any member shows
every host and every domain with its host, in SXP, JSON and HTML; ``xm pool-list`` and
``xm list --pool`` print them; a member killed shows ``down`` once its lease is gone; a
xend in no pool answers 404, and one whose etcd is stopped 503 (xm: one Error line).

Real parts: an etcd process on loopback (tests/support/etcd.py) and three xend processes
(sim driver) that are members of one pool, shared by the module's tests; the tests that
kill something start their own member, or come last (etcd stopped).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from random import Random
from typing import Any

import pytest

from tests.support.etcd import EtcdCluster
from tests.support.home import XendHome, new_home
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import Xend, run_xm, sim_vm
from xend_actors import sxp
from xend_actors.pool.entries import DomainEntry, HostEntry, Keys
from xend_actors.pool.etcd import Etcd, delete, put
from xend_actors.pool.view import PoolReader
from xend_actors.web.sxp_json import dumps, from_json

pytestmark = pytest.mark.integration

POOL = "view"
TTL = 2  # seconds: a killed member is down soon after
PLACED = {"h0": ["a0", "a1"], "h1": ["b0", "b1"], "h2": ["c0"]}


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(1)
    yield cluster
    cluster.close()


def member_config(etcd: EtcdCluster, host: str) -> str:
    return (f"(xend-pool {POOL})\n(xend-pool-etcd '{etcd.urls}')\n(xend-pool-host {host})\n"
            f"(xend-pool-ttl {TTL})\n")


@pytest.fixture(scope="module")
def members(etcd: EtcdCluster, reaper: Reaper) -> Iterator[dict[str, Xend]]:
    """Three members of the pool, each with its (paused) domains of ``PLACED``."""
    homes = {host: new_home(member_config(etcd, host)) for host in PLACED}
    with ThreadPoolExecutor(len(homes)) as starting:
        list(starting.map(XendHome.start, homes.values()))
    xends = {host: Xend(home) for host, home in homes.items()}
    try:
        for host, names in PLACED.items():
            for name in names:
                xends[host].create(sim_vm(name))
        states = {name: xends[host].state(name)
                  for host, names in PLACED.items() for name in names}
        wait_for(lambda: {name: domain.get("state") for name, domain
                          in domains(view(xends["h0"])).items()} == states,
                 10, "every member's summaries in the pool")
        yield xends
    finally:
        for xend in xends.values():
            xend.close()
        for home in homes.values():
            reaper.submit(str(home.root), home.tear_down)


def view(xend: Xend) -> sxp.Value:
    reply = xend.get("/xend/pool/")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/sxp"
    return sxp.parse(reply.text)


def fields(element: sxp.Value) -> dict[str, str]:
    return {kid[0]: kid[1] for kid in sxp.children(element)
            if isinstance(kid, list) and len(kid) == 2 and isinstance(kid[1], str)}


def hosts(pool: sxp.Value) -> dict[str, dict[str, str]]:
    return {fields(host)["name"]: fields(host)
            for host in sxp.children(sxp.child(pool, "hosts"), "host")}


def domains(pool: sxp.Value) -> dict[str, dict[str, str]]:
    return {fields(domain)["name"]: fields(domain)
            for domain in sxp.children(sxp.child(pool, "domains"), "domain")}


def test_every_member_shows_every_host_and_every_domain_with_its_host(
        members: dict[str, Xend]) -> None:
    for me, xend in members.items():
        pool = view(xend)
        assert sxp.child_value(pool, "name") == POOL
        assert sxp.child_value(pool, "member") == me
        shown = hosts(pool)
        assert set(shown) == set(PLACED)
        for host, names in PLACED.items():
            assert shown[host]["state"] == "up"
            assert shown[host]["domain_count"] == str(len(names))
            assert shown[host]["api"] == members[host].home.url
            assert int(shown[host]["free_mb"]) > 0 and int(shown[host]["cpus"]) > 0
        listed = domains(pool)
        assert list(listed) == sorted(listed)
        for host, names in PLACED.items():
            for name in names:
                domain = listed[name]
                assert domain["host"] == host
                assert domain["id"] == members[host].domid(name)
                assert domain["memory"] == "32" and domain["ha"] == "no"
                assert domain["state"] == members[host].state(name)


def test_the_view_follows_creates_changes_and_destroys(members: dict[str, Xend]) -> None:
    h1, h2 = members["h1"], members["h2"]
    before = view(h2)  # a member that read the pool before: it then reads only changes
    assert "n0" not in domains(before)
    h1.create(sim_vm("n0", memory=48))
    wait_for(lambda: domains(view(h2)).get("n0", {}).get("memory") == "48", 10,
             "n0 in the view")
    assert domains(view(h2))["n0"]["host"] == "h1"
    assert hosts(view(h2))["h1"]["domain_count"] == "3"
    h1.ok(h1.op("n0", "unpause"))
    # (a running sim guest's running/blocked toggles are not events: no letter compared)
    wait_for(lambda: domains(view(h2))["n0"]["state"] != "--p--", 10,
             "n0 unpaused in the view")
    h1.ok(h1.op("n0", "destroy", reason="halt"))
    wait_for(lambda: "n0" not in domains(view(h2)), 10, "n0 gone from the view")
    after = view(h2)
    assert hosts(after)["h1"]["domain_count"] == "2"
    assert placed(after) == placed(before)
    # Every member answers the same pool.
    assert placed(view(members["h0"])) == placed(after)


def placed(pool: sxp.Value) -> dict[str, str]:
    """Each domain's host."""
    return {name: domain["host"] for name, domain in domains(pool).items()}


def test_json_is_the_same_view_in_stable_shape(members: dict[str, Xend]) -> None:
    home = members["h1"].home
    with home.http() as http:
        reply = http.get("/xend/pool/", headers={"Accept": "application/json"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    data = reply.json()
    pool = data["pool"]
    assert pool["name"] == POOL and pool["member"] == "h1"
    by_host = {item["host"]["name"]: item["host"] for item in pool["hosts"]}
    assert set(by_host) == set(PLACED) and by_host["h2"]["domain_count"] == "1"
    on = {item["domain"]["name"]: item["domain"]["host"] for item in pool["domains"]}
    assert on == {name: host for host, names in PLACED.items() for name in names}
    # The JSON reads back as the SXP a program would have got, and is its mapping.
    assert domains(from_json(data)) == domains(view(members["h1"]))
    assert reply.text == dumps(from_json(data))
    # A change shows in the next JSON reply (each domain's text is kept until it changes).
    members["h1"].ok(members["h1"].op("b0", "unpause"))

    def b0_state() -> str:
        with home.http() as http:
            pool = http.get("/xend/pool/", headers={"Accept": "application/json"}).json()
        return next(item["domain"]["state"] for item in pool["pool"]["domains"]
                    if item["domain"]["name"] == "b0")

    wait_for(lambda: b0_state() != "--p--", 10, "b0 unpaused in the JSON view")


def test_xm_pool_list_prints_hosts_then_domains(members: dict[str, Xend]) -> None:
    done = run_xm(members["h2"].home, "pool-list")
    assert done.returncode == 0, done.stderr
    hosts_part, domains_part = done.stdout.split("\n\n")
    lines = hosts_part.splitlines()
    assert lines[0].split() == ["Host", "State", "Domains", "Free(MB)", "CPUs", "Load", "API"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(PLACED)
    for host, names in PLACED.items():
        assert rows[host][1:3] == ["up", str(len(names))]
        assert rows[host][-1] == members[host].home.url
    assert pool_rows(domains_part) == {name: host for host, names in PLACED.items()
                                       for name in names}
    done = run_xm(members["h2"].home, "pool-list", "-l")
    assert done.returncode == 0, done.stderr
    assert placed(sxp.parse(done.stdout)) == placed(view(members["h2"]))
    # A member lists its pool among what /xend/ holds.
    assert members["h2"].get_sxp("/xend/")[-1] == "pool"


def pool_rows(table: str) -> dict[str, str]:
    """Domain → host, from the table ``xm list --pool`` prints."""
    lines = table.splitlines()
    assert lines[0].split() == ["Name", "Id", "Mem(MB)", "VCPUs", "State", "HA", "Host"]
    return {line.split()[0]: line.split()[-1] for line in lines[1:]}


def test_xm_list_pool_lists_every_domain_of_the_pool_with_its_host(
        members: dict[str, Xend]) -> None:
    done = run_xm(members["h0"].home, "list", "--pool")
    assert done.returncode == 0, done.stderr
    rows = pool_rows(done.stdout)
    assert rows == {name: host for host, names in PLACED.items() for name in names}
    line = next(line for line in done.stdout.splitlines() if line.startswith("b1 "))
    assert line.split()[1:4] == [members["h1"].domid("b1"), "32", "1"]
    # Named ones only; a name the pool does not hold is an error.
    done = run_xm(members["h0"].home, "list", "--pool", "c0", "a1")
    assert list(pool_rows(done.stdout)) == ["c0", "a1"]
    done = run_xm(members["h0"].home, "list", "--pool", "-l", "b0")
    assert sxp.child_value(sxp.parse(done.stdout), "host") == "h1"
    done = run_xm(members["h0"].home, "list", "--pool", "nosuch")
    assert (done.returncode, done.stderr) == (1, "Error: No domain nosuch in the pool\n")


def test_the_pool_page_shows_hosts_and_domains_and_the_navigation_links_it(
        members: dict[str, Xend]) -> None:
    home = members["h0"].home
    viewer = home.new_token("pool-viewer", "viewer")
    with home.http(viewer) as http:
        page = http.get("/xend/pool/", headers={"Accept": "text/html", "User-Agent": "test"})
        # A viewer reads, in every format.
        assert http.get("/xend/pool/").status_code == 200
    assert page.status_code == 200, page.text
    html = page.text
    assert '<a href="/xend/pool/">Pool</a>' in html
    for host in PLACED:
        assert f'<tr data-host="{host}">' in html
    for names in PLACED.values():
        for name in names:
            assert f'<tr data-domain="{name}">' in html
    # A domain of this member's links to its page; another member's has no page here.
    assert '<a href="/xend/domain/a0">a0</a>' in html
    assert '<a href="/xend/domain/b0">' not in html


def test_a_xend_in_no_pool_says_so(fresh_xend: Callable[..., Xend]) -> None:
    alone = fresh_xend()
    reply = alone.get("/xend/pool/")
    assert reply.status_code == 404
    assert sxp.parse(reply.text)[0] == "xend.err"
    assert "xend is not in a pool" in reply.text
    assert "pool" not in alone.get_sxp("/xend/")
    page = alone.http.get("/xend/", headers={"Accept": "text/html", "User-Agent": "test"})
    assert page.status_code == 200 and 'href="/xend/pool/"' not in page.text
    done = run_xm(alone.home, "pool-list")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Error: xend is not in a pool") and \
        done.stderr.count("\n") == 1


def test_a_killed_member_is_down_and_its_domains_still_shown_on_it(
        etcd: EtcdCluster, members: dict[str, Xend],
        fresh_xend: Callable[..., Xend]) -> None:
    doomed = fresh_xend(member_config(etcd, "h9"))
    doomed.create(sim_vm("z0"))
    wait_for(lambda: domains(view(members["h1"])).get("z0", {}).get("state"), 10,
             "z0 in the pool's view")
    assert hosts(view(members["h1"]))["h9"]["state"] == "up"
    doomed.home.kill9()
    doomed.home.kill_simhv()
    wait_for(lambda: hosts(view(members["h1"]))["h9"]["state"] == "down", TTL + 5,
             "h9 down once its lease expired")
    pool = view(members["h1"])
    assert hosts(pool)["h9"] == {"name": "h9", "state": "down", "domain_count": "1"}
    assert domains(pool)["z0"]["host"] == "h9"
    done = run_xm(members["h0"].home, "pool-list")
    row = next(line.split() for line in done.stdout.splitlines() if line.startswith("h9 "))
    assert row[:3] == ["h9", "down", "1"]
    # The others stay up.
    assert {h: s["state"] for h, s in hosts(pool).items() if h != "h9"} == \
        dict.fromkeys(PLACED, "up")


def test_a_reader_that_reads_changes_sees_what_a_whole_read_sees(etcd: EtcdCluster) -> None:
    """The reader reads only what changed since its last read, and counts stretches of
    keys to find the deleted ones: after creates, changes and deletes of every kind, it
    answers what a new reader reading the whole pool answers. Bad entries are left out."""
    client, keys = Etcd(etcd.urls.split()), Keys("readers")
    random = Random(18)
    names = [f"d{n:04d}" for n in range(400)]

    def summary(name: str, host: str) -> bytes:
        return DomainEntry(name, host, random.randrange(1, 999), random.choice(
            ["r----", "-b---", "--p--"]), 32, 1, random.random() < 0.2).to_json()

    def claim(name: str) -> list[dict[str, Any]]:
        host = random.choice(["h0", "h1", "h2"])
        steps = [put(keys.name(name), host)]
        return steps + ([put(keys.domain(name), summary(name, host))]
                        if random.random() < 0.9 else [])

    for start in range(0, 300, 50):
        client.txn((), [step for name in names[start:start + 50] for step in claim(name)])
    client.put(keys.host("h0"), HostEntry("h0", "http://h0", "", 1, 1, 1, 0.0, 0.0).to_json())
    client.put(keys.name("bad one"), "not a member!")
    client.put(keys.domain("d0001x"), b"{not json")
    reader = PoolReader(client, keys, "h0")
    for _ in range(25):
        steps: list[dict[str, Any]] = []
        for name in random.sample(names, 12):
            what = random.random()
            if what < 0.3:
                steps += [delete(keys.name(name)), delete(keys.domain(name))]
            elif what < 0.4:
                steps.append(delete(keys.domain(name)))
            elif what < 0.5:
                steps.append(delete(keys.name(name)))
            else:
                steps += claim(name)
        client.txn((), steps)
        mine = reader.read()
        whole = PoolReader(client, keys, "h0").read()
        # (the module's members write to the same etcd meanwhile: revisions move on)
        assert mine.revision <= whole.revision
        assert mine.domains == whole.domains
        assert mine.hosts == whole.hosts
        assert mine.shown == sxp.show(mine.sxpr())
    assert "bad one" not in {domain.name for domain in mine.domains}


# Last: it stops the module's etcd.
def test_etcd_stopped_answers_503_and_xm_one_error_line(
        etcd: EtcdCluster, members: dict[str, Xend]) -> None:
    etcd.stop_all()
    reply = members["h0"].get("/xend/pool/")
    assert reply.status_code == 503
    assert "the pool's etcd is unreachable" in sxp.parse(reply.text)[1]
    with members["h0"].home.http() as http:
        reply = http.get("/xend/pool/", headers={"Accept": "application/json"})
    assert reply.status_code == 503
    assert "etcd is unreachable" in json.loads(reply.text)["error"]
    done = run_xm(members["h2"].home, "pool-list")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Error: the pool's etcd is unreachable") and \
        done.stderr.count("\n") == 1
    # Each member's own domains are served as ever.
    assert {"a0", "a1"} <= set(members["h0"].names())
    members["h0"].ok(members["h0"].op("a0", "unpause"))
