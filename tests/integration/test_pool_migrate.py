"""``xm migrate --pool`` (issue 18, Deliver 4): three xends, each in a network namespace
of its own on one bridge (a fourth namespace, which also runs the pool's etcd), members
of one pool, their relocation servers on with mutual TLS (``tests/support/pki.py``).

The domain goes to the other member that has room for it: not to the one with too
little free memory, never to its own host; it runs on there, and the pool's claim of its
name follows it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_pool_placement import Etcd
from tests.support.home import XendHome, new_home
from tests.support.netns import netns_usable
from tests.support.pki import Authority
from tests.support.processes import wait_for
from tests.support.xend import XM, Xend, sim_vm
from xend_actors import sxp

_WHY = netns_usable()
pytestmark = [pytest.mark.integration, *([pytest.mark.skip(reason=_WHY)] if _WHY else [])]

POOL = "moves"
SUBNET = "10.231.9"
HUB = f"{SUBNET}.254"
# name: (address, sim-memory MB): Domain-0 keeps 512 MB of each, so "small" has 512 free.
MEMBERS = {"src": (f"{SUBNET}.1", 4096), "small": (f"{SUBNET}.2", 1024),
           "roomy": (f"{SUBNET}.3", 4096)}


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


class NetnsEtcd(Etcd):
    """The test's etcd, in the hub namespace, on the bridge's address."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        super().__init__()

    def command(self, client: int, peer: int) -> list[str]:
        self.url = f"http://{HUB}:{client}"
        return ["ip", "netns", "exec", self.ns, "etcd", "--name", "e0",
                "--data-dir", str(self.folder / "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"e0=http://127.0.0.1:{peer}"]

    # The test's own namespace has no way to the hub: etcdctl asks from inside it.
    def _etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, "etcdctl", "--endpoints",
                               self.url, *args], capture_output=True, text=True, timeout=10)

    def _healthy(self) -> bool:
        return self._etcdctl("endpoint", "health").returncode == 0

    def prefix(self, prefix: str) -> dict[str, bytes]:
        done = self._etcdctl("get", "--prefix", prefix, "-w", "json")
        assert done.returncode == 0, done.stderr
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in json.loads(done.stdout).get("kvs", [])}


@pytest.fixture(scope="module")
def members() -> Iterator[tuple[NetnsEtcd, dict[str, Xend]]]:
    tag = secrets.token_hex(3)
    hub = f"plhub-{tag}"
    spaces = [hub]
    homes: dict[str, XendHome] = {}
    folder = Path(tempfile.mkdtemp(prefix="xend-pki-"))
    etcd: NetnsEtcd | None = None
    try:
        ip("netns", "add", hub)
        ip("-n", hub, "link", "set", "lo", "up")
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "addr", "add", f"{HUB}/24", "dev", "br0")
        ip("-n", hub, "link", "set", "br0", "up")
        etcd = NetnsEtcd(hub)
        pki = Authority(folder / "ca")
        for index, (name, (address, memory)) in enumerate(MEMBERS.items()):
            ns = f"pl{index}-{tag}"
            spaces.append(ns)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", f"plv{index}{tag}", "netns", ns, "type", "veth",
               "peer", "name", f"plb{index}", "netns", hub)
            ip("-n", ns, "link", "set", f"plv{index}{tag}", "name", "eth0")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", hub, "link", "set", f"plb{index}", "master", "br0", "up")
            issued = pki.issue(f"xend-{address}-{tag}", ips=(address,))
            home = new_home(
                f"(xend-address {address})\n(xend-tls yes)\n(sim-memory {memory})\n"
                f"(xend-pool {POOL})\n(xend-pool-etcd '{etcd.url}')\n(xend-pool-host {name})\n"
                "(xend-pool-ttl 4)\n(xend-relocation-server yes)\n"
                f"(xend-relocation-address {address})\n"
                + sxp.show(["xend-relocation-hosts-allow", re.escape(SUBNET) + r"\..*"])
                + "\n" + issued.relocation_config())
            home.netns = ns
            homes[name] = home
            home.start()
        wait_for(lambda: len(etcd.prefix(f"/xend-pool/{POOL}/hosts/")) == len(MEMBERS), 20,
                 "every member to join")
        xends = {name: Xend(home) for name, home in homes.items()}
        yield etcd, xends
        for xend in xends.values():
            xend.close()
    finally:
        for home in homes.values():
            home.tear_down()
        if etcd is not None:
            etcd.close()
        for ns in spaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_xm_migrate_pool_moves_the_domain_to_the_member_with_room(
        members: tuple[NetnsEtcd, dict[str, Xend]]) -> None:
    etcd, xends = members
    hosts = {k.rsplit("/", 1)[1]: json.loads(v)
             for k, v in etcd.prefix(f"/xend-pool/{POOL}/hosts/").items()}
    assert hosts["roomy"]["relocation"] == f"{SUBNET}.3:8002"
    assert hosts["small"]["free_mb"] < 768 < hosts["roomy"]["free_mb"], hosts
    xends["src"].create(sim_vm("mover", memory=768), unpause=True)

    done = subprocess.run([XM, "--unix", str(xends["src"].home.unix_path), "migrate",
                           "--pool", "-l", "mover"], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"http://{re.escape(SUBNET)}\.3:8002/xend/domain/\d+\n", done.stdout), \
        done.stdout
    assert "Migrated domain mover to pool member roomy" in done.stderr

    assert "mover" not in xends["src"].names()
    assert "mover" in xends["roomy"].names() and "p" not in xends["roomy"].state("mover")
    assert "mover" not in xends["small"].names()
    assert etcd.prefix(f"/xend-pool/{POOL}/names/mover") == {
        f"/xend-pool/{POOL}/names/mover": b"roomy"}


def test_a_domain_no_other_member_has_room_for_stays_where_it_is(
        members: tuple[NetnsEtcd, dict[str, Xend]]) -> None:
    _, xends = members
    xends["src"].create(sim_vm("stayer", memory=3500), unpause=True)
    reply = xends["src"].post("/xend/pool/", op="migrate", dom="stayer", live="1")
    message = Xend.error(reply, 409)
    assert message.startswith("no pool member has room for domain stayer: it needs 3500 MB, "
                              "the most free is "), message
    assert message.endswith("(on roomy)"), message
    assert "p" not in xends["src"].state("stayer")
