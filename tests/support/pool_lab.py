"""A lab of hosts for the pool tests: network namespaces on one Linux bridge.

A "switch" namespace holds the bridge; every node — a host running a xend (``tests.hosts``'
``Host``), an etcd member, or a bare namespace — is a namespace of its own joined to the
bridge by a veth pair, with an address in the lab's subnet (10.231.9.0/24: other tests use
10.231.7.x; every lab has its own bridge, so labs running side by side do not meet).
``cut(node)`` sets the node's veth down at the switch: it reaches nobody and nobody it, its
own processes running on; ``mend(node)`` joins it again. Namespaces are named with the lab's
own prefix (``xpl``, the test process's pid, random hex digits); a new lab first deletes the
namespaces of labs whose test process died without closing them.

``etcd(size)`` starts an ``EtcdCluster`` with a member in each of ``size`` nodes;
``start_xends(n, config)`` starts xends on ``n`` hosts, each with the config lines
``config(name, address)`` gives (``pool_config(cluster)`` makes them members of a pool).
``close`` ends everything the lab made — clusters, xends (on the ``Reaper``'s threads),
namespaces — also after a test that failed half-way. The xends' hosts are ``tests.hosts``'
own namespaces (``xm-...``), joined to the bridge.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.hosts import Host
from tests.support.etcd import EtcdCluster, pid_gone
from tests.support.etcd import sweep as sweep_clusters
from tests.support.netns import Place, inside
from tests.support.pki import Authority
from tests.support.sharing import Reaper

SUBNET = "10.231.9"
BRIDGE = "br0"


@dataclass(frozen=True)
class Node(Place):
    """A namespace of the lab: its address on the bridge, and ``port``, its veth's end in
    the switch namespace."""

    ns: str
    port: str = ""


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"
    return done.stdout


def sweep() -> None:
    """Delete the namespaces of labs whose test process is gone, and end what runs in them
    (and the clusters of such processes)."""
    sweep_clusters()
    for ns in (line.split()[0] for line in _ip("netns", "list").splitlines() if line):
        maker = re.fullmatch(r"xpl(\d+)x[0-9a-f]+-.*", ns)
        if maker is None or not pid_gone(int(maker.group(1))):
            continue
        for pid in _ip("netns", "pids", ns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class PoolLab:
    """A switch namespace with a bridge, and the nodes joined to it (see the module)."""

    def __init__(self, reaper: Reaper, subnet: str = SUBNET) -> None:
        self.reaper = reaper
        self.subnet = subnet
        sweep()
        self.prefix = f"xpl{os.getpid()}x{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.nodes: dict[str, Node] = {}
        self.hosts: dict[str, Host] = {}
        self.clusters: list[EtcdCluster] = []
        self._made: list[str] = []  # namespaces the lab made itself, the switch first
        self._folder = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.pki = Authority(self._folder / "ca")
        try:
            self._add_ns(self.switch)
            _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def _join(self, name: str, ns: str) -> Node:
        """Join namespace ``ns`` to the bridge as node ``name``, with the next address."""
        assert name not in self.nodes and len(name) <= 10, name
        index = len(self.nodes) + 1
        assert index < 200, "the lab's subnet is full"
        node = Node(ns=ns, address=f"{self.subnet}.{index}", port=f"p-{name}")
        _ip("link", "add", node.port, "netns", self.switch, "type", "veth",
            "peer", "name", "eth0", "netns", ns)
        _ip("-n", self.switch, "link", "set", node.port, "master", BRIDGE, "up")
        _ip("-n", ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.nodes[name] = node
        return node

    def node(self, name: str) -> Node:
        """A new bare namespace joined to the bridge: node ``name``."""
        ns = f"{self.prefix}-{name}"
        self._add_ns(ns)
        return self._join(name, ns)

    def cut(self, node: Node) -> None:
        """Partition ``node``: its veth down at the switch, so it reaches nobody."""
        _ip("-n", self.switch, "link", "set", node.port, "down")

    def mend(self, node: Node) -> None:
        """Join a cut ``node`` to the others again."""
        _ip("-n", self.switch, "link", "set", node.port, "up")

    def reaches(self, node: Node, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from inside ``node`` to ``address``:``port`` is made
        within ``timeout`` seconds."""
        try:
            with inside(node.ns), socket.create_connection((address, port), timeout):
                return True
        except OSError:
            return False

    # --- what runs in the lab -----------------------------------------------------------------

    def etcd(self, size: int = 3, tls: bool = False) -> EtcdCluster:
        """An etcd cluster of ``size`` members, each in a node of its own (``e1``...),
        speaking TLS with certificates from the lab's ``pki`` if ``tls``."""
        first = sum(len(cluster.members) for cluster in self.clusters) + 1
        places = [self.node(f"e{first + index}") for index in range(size)]
        cluster = EtcdCluster(size, places, self.pki if tls else None)
        self.clusters.append(cluster)
        return cluster

    def start_xends(self, count: int = 3,
                    config: Callable[[str, str], str] = lambda name, address: "",
                    ) -> list[Host]:
        """Xends on ``count`` new hosts (``h1``...), each started with the config lines
        ``config(name, address)`` gives it, e.g. the pool's options."""
        started = []
        for _ in range(count):
            name = f"h{len(self.hosts) + 1}"
            address = f"{self.subnet}.{len(self.nodes) + 1}"
            host = Host(address, config(name, address))
            self.hosts[name] = host
            node = self._join(name, host.ns)
            assert node.address == address
            host.start()
            started.append(host)
        return started

    @staticmethod
    def pool_config(cluster: EtcdCluster, pool: str = "lab", extra: str = "",
                    ) -> Callable[[str, str], str]:
        """A ``config`` for ``start_xends``: each host a member of ``pool`` on ``cluster``
        (with TLS client files of its own if the cluster speaks TLS), named as its node
        (``h1``...), its API on its lab address with a self-signed certificate; ``extra``
        lines first (the first occurrence of an option wins)."""
        def config(name: str, address: str) -> str:
            return (f"{extra}(xend-pool {pool})\n{cluster.xend_config(name)}"
                    f"(xend-pool-host {name})\n(xend-address {address})\n(xend-tls yes)\n")
        return config

    def host_node(self, host: Host) -> Node:
        """The node ``host`` runs in (to ``cut`` it)."""
        [node] = [node for node in self.nodes.values() if node.ns == host.ns]
        return node

    def close(self) -> None:
        """End everything the lab made: etcd members, xends, namespaces, files."""
        try:
            for cluster in self.clusters:
                cluster.close()
        finally:
            for name, host in self.hosts.items():
                self.reaper.submit(f"{self.prefix} {name}", host.tear_down)
            # A namespace goes when its last process has: etcd's are gone, a xend's own
            # namespace is deleted by its teardown. Its veth pair goes with it.
            for ns in reversed(self._made):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(self._folder, ignore_errors=True)
            self.clusters.clear()
            self.hosts.clear()
            self._made.clear()
