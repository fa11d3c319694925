"""The pool tests' lab works as they rely on (tests/support/pool_lab.py, etcd.py): a
3-member etcd cluster in namespaces of its own elects a leader and goes on when the leader
is killed, a killed member comes back with what was written meanwhile, and a whole
cluster stopped and started again keeps its data; a node cut off at the switch reaches no
member and, mended, does again; xends on the lab's hosts run, reach each other over the
bridge, and one cut off goes on serving on its own; xends given the lab's pool config
register in its cluster. A TLS cluster serves only clients with a certificate from its CA,
and the files it issues for a xend work with the pool's own client; a xend given them
registers in it, whatever CA bundle its environment names for requests.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.etcd import EtcdCluster, EtcdUnreachable
from tests.support.netns import netns_usable
from tests.support.pki import Authority
from tests.support.pool_lab import PoolLab
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from xend_actors.pool.etcd import Etcd

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]


@pytest.fixture(scope="module")
def lab(reaper: Reaper) -> Iterator[PoolLab]:
    made = PoolLab(reaper)
    yield made
    made.close()


@pytest.fixture(scope="module")
def module_etcd(lab: PoolLab) -> EtcdCluster:
    return lab.etcd(3)


@pytest.fixture
def etcd(module_etcd: EtcdCluster, lab: PoolLab) -> Iterator[EtcdCluster]:
    """The module's cluster, every member running; whatever a test cut is mended after."""
    yield module_etcd
    for node in lab.nodes.values():
        lab.mend(node)
    module_etcd.start_all()


def test_the_cluster_goes_on_when_its_leader_is_killed(etcd: EtcdCluster) -> None:
    leader = etcd.leader()
    etcd.put("/lab/before", "1", via=leader)

    etcd.kill(leader)
    successor = etcd.leader()
    assert successor is not leader
    [other] = [m for m in etcd.members if m not in (leader, successor)]
    etcd.put("/lab/after", "2", via=other)
    assert etcd.get_prefix("/lab/", via=successor) == {"/lab/before": b"1", "/lab/after": b"2"}

    etcd.restart(leader)
    assert etcd.get("/lab/after", via=leader) == b"2"


def test_a_cluster_stopped_and_started_again_keeps_its_data(etcd: EtcdCluster) -> None:
    etcd.put("/lab/kept", "yes")
    etcd.stop_all()
    with pytest.raises(EtcdUnreachable):
        etcd.get("/lab/kept")
    etcd.start_all()
    assert etcd.get("/lab/kept") == b"yes"


def test_a_cut_node_reaches_no_member_and_a_mended_one_does(
        lab: PoolLab, etcd: EtcdCluster) -> None:
    node = lab.node("c1")
    etcd.put("/lab/from-c1", "before", origin=node.ns)

    lab.cut(node)
    for member in etcd.members:
        with pytest.raises(EtcdUnreachable):
            etcd.put("/lab/from-c1", "cut", via=member, origin=node.ns, timeout=0.5)
    assert etcd.get("/lab/from-c1") == b"before"  # the others still reach the cluster

    lab.mend(node)
    wait_for(lambda: lab.reaches(node, etcd.members[0].place.address, 2379),
             what="the mended node to reach etcd")
    etcd.put("/lab/from-c1", "after", origin=node.ns)
    assert etcd.get("/lab/from-c1") == b"after"


def test_xends_on_the_lab_hosts_reach_each_other_and_a_cut_one_serves_on(
        lab: PoolLab, etcd: EtcdCluster) -> None:
    hosts = lab.start_xends(3, config=lambda name, address: (
        f"(xend-address {address})\n(xend-tls yes)\n"))
    h1, h2, _ = hosts
    for host in hosts:
        assert host.names() == ["Domain-0"]
    port = h2.home.http_port
    assert lab.reaches(lab.host_node(h1), h2.address, port)
    assert lab.reaches(lab.host_node(h2), etcd.members[0].place.address, 2379)

    lab.cut(lab.host_node(h2))
    assert not lab.reaches(lab.host_node(h1), h2.address, port)
    assert not lab.reaches(lab.host_node(h2), etcd.members[0].place.address, 2379)
    h2.start_guest("alone")
    assert h2.names() == ["Domain-0", "alone"]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("etcd-ca"))


def test_a_tls_cluster_serves_only_clients_with_its_certificates(
        authority: Authority, tmp_path: Path) -> None:
    cluster = EtcdCluster(1, pki=authority)
    try:
        [member] = cluster.members
        assert member.client_url.startswith("https://127.0.0.1:")
        assert cluster.urls == member.client_url
        cluster.put("/lab/tls", "ok")

        files = cluster.client_files("xend-h1")
        config = cluster.xend_config("xend-h1")
        assert f"(xend-pool-etcd '{member.client_url}')" in config
        assert "(xend-pool-etcd-cert " in config and "(xend-pool-etcd-key " in config
        pools = Etcd([member.client_url], ca=files.ca, cert=files.cert, key=files.key)
        found = pools.get("/lab/tls")
        assert found is not None and found.value == b"ok"

        anonymous = ssl.create_default_context(cafile=str(authority.ca))
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=anonymous, timeout=5) as http:
            http.post(member.client_url + "/v3/kv/range", json={"key": "Lw=="})
        stranger = Authority(tmp_path / "other", "another CA").issue("stranger")
        foreign = ssl.create_default_context(cafile=str(authority.ca))
        foreign.load_cert_chain(stranger.cert, stranger.key)
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=foreign, timeout=5) as http:
            http.post(member.client_url + "/v3/kv/range", json={"key": "Lw=="})
    finally:
        cluster.close()
    assert not cluster.folder.exists()


def test_xends_started_with_the_pool_config_join_the_pool_on_the_lab_cluster(
        lab: PoolLab, etcd: EtcdCluster) -> None:
    hosts = lab.start_xends(3, config=lab.pool_config(etcd, pool="labpool"))
    names = [name for name, host in lab.hosts.items() if host in hosts]
    wait_for(lambda: set(etcd.get_prefix("/xend-pool/labpool/hosts/"))
             == {f"/xend-pool/labpool/hosts/{name}" for name in names},
             what="the three members registered in etcd")


def test_a_member_reaches_a_tls_cluster_whatever_ca_bundle_its_environment_names(
        lab: PoolLab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cluster = lab.etcd(1, tls=True)
    elsewhere = Authority(tmp_path / "other", "another CA").ca
    # requests let these override a session's CA file (a member could not reach etcd)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(elsewhere))  # xend inherits them
    monkeypatch.setenv("CURL_CA_BUNDLE", str(elsewhere))
    [host] = lab.start_xends(1, config=lab.pool_config(cluster, pool="tlspool"))
    name = next(name for name, started in lab.hosts.items() if started is host)
    wait_for(lambda: cluster.get_prefix("/xend-pool/tlspool/hosts/"),
             what=f"{name} registered in the TLS cluster")
