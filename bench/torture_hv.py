"""The torture run's hypervisors: what "the hypervisor" of a xend is, how to list its
domains, kill a piece of it, and find what it left behind.

``SimHv`` is xend-simhv, one process per xend (``bench/torture.py`` without flags).
``QemuHv`` is xend's qemu driver with real guests (``--qemu``): the test guest of
``tests/guest/build`` under TCG, a qemu process per domain. Each xend runs in a
network namespace of its own (its bridge ``xen-br0`` and the guests' taps stay there),
the two joined by a veth pair for migrations; the run talks to xend over its Unix
socket, runs ``xm`` with ``--unix``, and opens console sockets inside the namespace.
The hypervisor's list is the qemu processes the run dir's ``state.json`` files name
(those alive); killing a piece of it is a ``kill -9`` of one guest's qemu, which xend
must see as that domain's crash (its restart rule applies), never a hang.

The checks a qemu xend adds after each round: every qemu process (found by its run-dir
path in /proc) belongs to a domain xend lists, one each; no run-dir folder without a
domain; no tap ``vifD.N`` nor bridge port without its domain's vif, and no vif of a
listed domain without its tap; no cgroup left for a qemu that is gone; and xend-simhv
never runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.e2e.qemu import MEMORY, build_guest
from tests.support.home import XendHome, new_home, xend_command
from tests.support.processes import kill_guests, process_gone, wait_gone
from tests.support.xend import SIM_KERNEL
from xend_actors import sxp
from xend_actors.hypervisor.qemu import cgroup
from xend_actors.hypervisor.sim.driver import SimDriver

CLONE_NEWNET = 0x40000000
SUBNET = "10.231.15"  # the veth between the two namespaces (tests use .7)
BRIDGE = "xen-br0"
TAP = re.compile(r"vif(\d+)\.(\d+)")
QEMU_DIR = re.compile(rb"/run/qemu/(\d+)/")


class SiteLike(Protocol):
    label: str
    home: XendHome


class Hypervisor(Protocol):
    """What the torture needs of a hypervisor, sim or qemu."""

    name: str  # in the report: "<name> kills"
    ops: tuple[str, ...]  # what the clients choose from (repeats weigh)
    transports: tuple[tuple[str, ...], tuple[int, ...]]  # and their weights
    failure_words: tuple[str, ...]  # a 500 naming one is the hypervisor's own failure
    keep_saves: int  # save files kept per name (0: all)

    def home(self, label: str, relocation_port: int) -> XendHome: ...
    def address(self, label: str) -> str: ...
    def vm_config(self, name: str, disk: Path, number: int) -> sxp.Value: ...
    def domains(self, site: SiteLike) -> list[tuple[int, str]]: ...
    def kill_one(self, site: SiteLike, rng: Any) -> bool: ...
    def helper_dead(self, site: SiteLike) -> bool: ...
    def orphans(self, site: SiteLike, processes: dict[int, str],
                listed: list[sxp.Value]) -> list[str]: ...
    def listening(self, site: SiteLike) -> set[int]: ...
    def connect(self, site: SiteLike, port: int) -> socket.socket: ...
    def tear_down(self, site: SiteLike) -> None: ...
    def close(self) -> None: ...


# --- xend-simhv ---------------------------------------------------------------------------


class SimHv:
    """xend-simhv: one process per xend; the run on 127.0.0.1."""

    name = "simhv"
    ops: tuple[str, ...] = ("create", "create", "destroy", "pause", "unpause", "shutdown",
                            "reboot", "save", "restore", "migrate", "vbd", "vif", "console")
    transports: tuple[tuple[str, ...], tuple[int, ...]] = (("unix", "tcp", "xm"), (5, 4, 1))
    failure_words: tuple[str, ...] = ("xend-simhv", "Domain died")
    keep_saves = 0

    def home(self, label: str, relocation_port: int) -> XendHome:
        return new_home("(sim-memory 8192)\n(xend-relocation-server yes)\n"
                        f"(xend-relocation-port {relocation_port})\n"
                        "(xend-relocation-address 127.0.0.1)\n"
                        "(xend-relocation-tls no)\n")

    def address(self, label: str) -> str:
        return "127.0.0.1"

    def vm_config(self, name: str, disk: Path, number: int) -> sxp.Value:
        return ["vm", ["name", name], ["memory", "16"],
                ["image", ["linux", ["kernel", SIM_KERNEL]]],
                ["device", ["vif"]],
                ["device", ["vbd", ["uname", f"file:{disk}"], ["dev", "sda1"], ["mode", "w!"]]]]

    def domains(self, site: SiteLike) -> list[tuple[int, str]]:
        try:
            driver = SimDriver(site.home.simhv_socket)
            try:
                return [(d.domid, d.name) for d in driver.list_domains()]
            finally:
                driver.close()
        except Exception as error:  # a dead simhv is a finding, not a crash
            return [(-1, f"unreachable: {error}")]

    def kill_one(self, site: SiteLike, rng: Any) -> bool:
        pid = _simhv_pid(site.home)
        if pid is None or process_gone(pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)
        return True

    def helper_dead(self, site: SiteLike) -> bool:
        pid = _simhv_pid(site.home)
        return pid is None or process_gone(pid)

    def orphans(self, site: SiteLike, processes: dict[int, str],
                listed: list[sxp.Value]) -> list[str]:
        simhvs = [pid for pid, cmd in processes.items() if "xend-simhv" in cmd]
        return [] if len(simhvs) == 1 else [f"{len(simhvs)} xend-simhv processes (want 1): "
                                            f"{simhvs}"]

    def listening(self, site: SiteLike) -> set[int]:
        """The ports xend's own process listens on (the host's would count another
        process's listener on a port past the console span as the console's)."""
        pid = site.home.pid()
        return set(listening_ports(Path("/proc/net/tcp"), owner=pid)) if pid else set()

    def connect(self, site: SiteLike, port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=3)

    def tear_down(self, site: SiteLike) -> None:
        site.home.kill_simhv()

    def close(self) -> None:
        pass


def _simhv_pid(home: XendHome) -> int | None:
    try:
        return int((home.run_dir / "simhv.pid").read_text())
    except (OSError, ValueError):
        return None


def listening_ports(table: Path, owner: int | None = None) -> Iterator[int]:
    """The TCP ports something listens on (IPv4), from a /proc net table; with ``owner``,
    only those of that process's sockets."""
    inodes: set[str] | None = None
    if owner is not None:
        inodes = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{owner}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    with contextlib.suppress(OSError):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and (inodes is None or fields[9] in inodes):  # 0A: LISTEN
                yield int(fields[1].rsplit(":", 1)[1], 16)


# --- qemu ----------------------------------------------------------------------------------


class QemuHv:
    """xend's qemu driver, each xend in a network namespace of its own."""

    name = "qemu"
    ops: tuple[str, ...] = ("create", "create", "destroy", "pause", "unpause", "shutdown",
                            "reboot", "save", "restore", "migrate", "vbd", "vif", "console",
                            "console", "sched")
    # No TCP client: xend listens inside its namespace (its Unix socket is reachable).
    transports: tuple[tuple[str, ...], tuple[int, ...]] = (("unix", "unix-close", "xm"), (5, 4, 1))
    # A host without a cgroup cpu controller cannot weigh a qemu: the hypervisor's 500.
    failure_words: tuple[str, ...] = ("qemu", "Domain died", "no cgroup cpu controller")
    keep_saves = 2  # 90 MiB each

    def __init__(self) -> None:
        self.guest = build_guest()
        self.namespaces: dict[str, str] = {}
        self.pids_seen: set[int] = set()  # every qemu the run saw: their cgroups must go
        self.lock = threading.Lock()
        self.hierarchy = cgroup.find_hierarchy()
        for label in ("a", "b"):
            ns = f"tq{label}-{secrets.token_hex(3)}"
            _ip("netns", "add", ns)
            self.namespaces[label] = ns
            _ip("-n", ns, "link", "set", "lo", "up")
        a, b = self.namespaces["a"], self.namespaces["b"]
        _ip("-n", a, "link", "add", "tq0", "type", "veth", "peer", "name", "tq1", "netns", b)
        for label, dev, host in (("a", "tq0", 1), ("b", "tq1", 2)):
            ns = self.namespaces[label]
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def home(self, label: str, relocation_port: int) -> XendHome:
        home = NetHome(Path(tempfile.mkdtemp(prefix="xend-")), extra=(
            "(hypervisor qemu)\n(qemu-accel tcg)\n"
            f"(vif-bridge {BRIDGE})\n(xend-relocation-server yes)\n"
            f"(xend-relocation-port {relocation_port})\n"
            f"(xend-relocation-address {self.address(label)})\n"
            "(xend-relocation-tls no)\n"), netns=self.namespaces[label])
        home.write_config()
        return home

    def address(self, label: str) -> str:
        return f"{SUBNET}.{1 if label == 'a' else 2}"

    def vm_config(self, name: str, disk: Path, number: int) -> sxp.Value:
        # Half the names restart after a crash (a killed qemu), half stay dead.
        return ["vm", ["name", name], ["memory", MEMORY],
                ["restart", "always" if number % 2 else "onreboot"],
                ["image", ["linux", ["kernel", self.guest.kernel],
                           ["ramdisk", self.guest.ramdisk], ["args", "quiet loglevel=3"]]],
                ["device", ["vif"]],
                ["device", ["vbd", ["uname", f"file:{disk}"], ["dev", "sda1"], ["mode", "w!"]]]]

    # --- the hypervisor's view ---

    def states(self, site: SiteLike) -> dict[int, dict[str, Any]]:
        """The run dir's domain states, by id."""
        found = {}
        for file in (site.home.run_dir / "qemu").glob("*/state.json"):
            with contextlib.suppress(OSError, ValueError):
                found[int(file.parent.name)] = json.loads(file.read_text())
        return found

    def alive(self, state: dict[str, Any]) -> bool:
        pid = int(state.get("pid", 0))
        if not pid or process_gone(pid):
            return False
        with contextlib.suppress(OSError):
            return b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
        return False

    def domains(self, site: SiteLike) -> list[tuple[int, str]]:
        """Domain-0 and every domain whose qemu runs, as its state names it."""
        found = [(0, "Domain-0")]
        for domid, state in sorted(self.states(site).items()):
            if state.get("pid"):
                with self.lock:
                    self.pids_seen.add(int(state["pid"]))
            if self.alive(state):
                found.append((domid, str(state.get("name"))))
        return found

    def kill_one(self, site: SiteLike, rng: Any) -> bool:
        """``kill -9`` one guest's qemu, chosen at random."""
        running = [int(s["pid"]) for s in self.states(site).values() if self.alive(s)]
        if not running:
            return False
        pid = rng.choice(sorted(running))
        with self.lock:
            self.pids_seen.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)
        return True

    def helper_dead(self, site: SiteLike) -> bool:
        return False  # no helper process: each qemu is its domain

    # --- what must not be left ---

    def orphans(self, site: SiteLike, processes: dict[int, str],
                listed: list[sxp.Value]) -> list[str]:
        problems = []
        domains = {int(sxp.child_value(d, "id")): d for d in listed}
        qemus: dict[int, list[int]] = {}
        for pid, cmdline in processes.items():
            if "xend-simhv" in cmdline:
                problems.append(f"a xend-simhv runs under the qemu driver: {pid}")
            if "qemu-system" not in cmdline:
                continue
            with self.lock:
                self.pids_seen.add(pid)
            match = QEMU_DIR.search(cmdline.encode())
            qemus.setdefault(int(match.group(1)) if match else -1, []).append(pid)
        for domid, pids in sorted(qemus.items()):
            if domid not in domains:
                problems.append(f"orphan qemu {pids} for domain {domid}, which xend does "
                                "not list")
            elif len(pids) > 1:
                problems.append(f"{len(pids)} qemu processes for domain {domid}: {pids}")
        folders = {int(p.name) for p in (site.home.run_dir / "qemu").glob("*")
                   if p.is_dir() and p.name.isdigit()}
        for domid in sorted(folders - set(domains)):
            problems.append(f"run-dir folder qemu/{domid} left without its domain")
        problems += self.link_problems(site, domains)
        problems += self.cgroup_problems()
        return problems

    def link_problems(self, site: SiteLike, domains: dict[int, sxp.Value]) -> list[str]:
        ns = self.namespaces[site.label]
        taps = set(_links(ns))
        ports = set(_links(ns, "master", BRIDGE))
        vifs = {f"vif{domid}.{sxp.child_value(vif, 'idx')}"
                for domid, domain in domains.items() if domid != 0
                for vif in sxp.children(sxp.child(domain, "devices") or ["devices"], "vif")}
        problems = [f"tap {tap} without its domain's vif" for tap in sorted(taps - vifs)]
        problems += [f"bridge port {port} without its domain's vif"
                     for port in sorted(ports - vifs)]
        problems += [f"vif {vif} of a listed domain has no tap on {BRIDGE}"
                     for vif in sorted(vifs - ports)]
        return problems

    def cgroup_problems(self) -> list[str]:
        if self.hierarchy is None:
            return []
        with self.lock:
            pids = sorted(self.pids_seen)
        return [f"cgroup {self.hierarchy.group(pid)} left for qemu {pid}, which is gone"
                for pid in pids if process_gone(pid) and self.hierarchy.group(pid).exists()]

    def listening(self, site: SiteLike) -> set[int]:
        pid = site.home.pid()
        return set(listening_ports(Path(f"/proc/{pid}/net/tcp"))) if pid else set()

    def connect(self, site: SiteLike, port: int) -> socket.socket:
        sock = in_netns(self.namespaces[site.label], socket.socket)
        try:
            sock.settimeout(3)
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    def tear_down(self, site: SiteLike) -> None:
        kill_guests(site.home.run_dir)

    def close(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@dataclass
class NetHome(XendHome):
    """A home whose xend enters its network namespace only (``nsenter --net``): ``ip
    netns exec`` also makes a mount namespace with /sys mounted again, which hides the
    cgroup hierarchies the qemu driver puts qemus in."""

    def xend(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", *xend_command(),
             "--config", str(self.config_file), *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _links(ns: str, *select: str) -> Iterator[str]:
    """The tap names ``vifD.N`` in ``ns`` (``select``: e.g. ``master BRIDGE``)."""
    done = subprocess.run(["ip", "-n", ns, "-o", "link", "show", *select],
                          capture_output=True, text=True)
    for line in done.stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if TAP.fullmatch(name):
            yield name


def in_netns(ns: str, make: Any) -> Any:
    """``make()`` run in network namespace ``ns``, on a thread of its own (setns changes
    the calling thread only); a socket made there stays in it."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as error:  # handed to the caller
            failure.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
