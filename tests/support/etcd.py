"""A real etcd cluster for the pool tests: N ``etcd`` processes (3 by default, 1 allowed)
started together with ``--initial-cluster`` and waited on until every member is healthy.

Each member runs at a ``Place``: in a network namespace of its own (a ``PoolLab`` node:
port 2379 for clients, 2380 for peers, at its address on the lab's bridge), or all on
loopback in the test's own namespace, each with ports of its own, for tests that need no
partition. ``urls`` is what a xend's ``(xend-pool-etcd '...')`` says. The test itself
reaches a member in its namespace by stepping a thread in (``netns.inside``), so
``leader``, ``call``, ``put`` and ``get`` work in both kinds; they speak etcd's HTTP/JSON
gateway (``/v3/...``) with httpx, as etcd3gw does.

With an ``Authority`` the members speak TLS to clients and to each other, with server
certificates from it, and require client certificates from it (``--client-cert-auth``);
``client_files`` issues one for a xend (its ``xend-pool-etcd-ca/-cert/-key``).

Data live in a folder under /dev/shm: etcd fsyncs its WAL on every write, which tmpfs
makes free, so a test's writes do not wait on (or wear) the disk; nothing in there needs
to outlive the cluster. It costs memory: etcd preallocates its WAL, about 120 MiB a member.
``close`` kills every member and removes the folder; a new cluster first removes what
clusters of test processes that died without closing left (folders name their maker's pid).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.netns import Place, inside
from tests.support.pki import Authority, Issued
from tests.support.ports import free_port

# etcd's own timeouts, short so that tests are fast: a leader killed is replaced within
# about a second (the defaults, 100 ms and 1 s, are made for real networks and disks).
TIMING = ("--heartbeat-interval", "50", "--election-timeout", "500")
START_TIMEOUT = 30.0  # seconds for members to start and agree on a leader
SHM = Path("/dev/shm")
BASE = SHM if SHM.is_dir() else Path(tempfile.gettempdir())


@dataclass
class Member:
    """One etcd member: where it runs, its ports, its data and its process (None: down)."""

    name: str
    place: Place
    client_port: int
    peer_port: int
    folder: Path
    scheme: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.place.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.place.address}:{self.peer_port}"

    @property
    def log(self) -> Path:
        return self.folder / "etcd.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return f"\n--- {self.name}'s log:\n" + self.log.read_text(errors="replace")[-2000:]
        return ""


def pid_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def sweep() -> None:
    """Kill the members and remove the data of clusters whose test process is gone."""
    for folder in BASE.glob("xetcd-*-*"):
        maker = folder.name.split("-")[1]
        if not maker.isdigit() or not pid_gone(int(maker)):
            continue
        mark = str(folder).encode() + b"/"
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError):
                if entry.name.isdigit() and mark in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


class EtcdUnreachable(Exception):
    """No member answered (down, or cut off from where the test asked)."""


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    """The range_end that makes a range of every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return _b64(bytes(raw))


class EtcdCluster:
    """``size`` etcd members, one at each of ``places`` (default: on loopback), started
    and healthy on return; TLS with certificates from ``pki`` if given."""

    def __init__(self, size: int = 3, places: Sequence[Place] = (),
                 pki: Authority | None = None) -> None:
        assert size >= 1 and (not places or len(places) == size), (size, places)
        sweep()
        self.token = f"xetcd-{os.getpid()}-{secrets.token_hex(4)}"
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.token}-", dir=BASE))
        self.pki = pki
        scheme = "https" if pki else "http"
        self.members: list[Member] = []
        for index in range(size):
            place = places[index] if places else Place(None, "127.0.0.1")
            own = place.ns is not None  # a namespace of its own: the usual ports are free
            self.members.append(Member(
                f"m{index + 1}", place, 2379 if own else free_port(),
                2380 if own else free_port(), self.folder / f"m{index + 1}", scheme))
        self._tls: ssl.SSLContext | None = None
        self._server: dict[str, Issued] = {}
        if pki:
            for member in self.members:
                self._server[member.name] = pki.issue(
                    f"{self.token}-{member.name}", ips=(member.place.address,))
            mine = pki.issue(f"{self.token}-tests")
            self._tls = ssl.create_default_context(cafile=str(pki.ca))
            self._tls.load_cert_chain(mine.cert, mine.key)
        try:
            self.start_all()
        except BaseException:
            self.close()
            raise

    # --- what a xend is told ----------------------------------------------------------------

    @property
    def urls(self) -> str:
        """The members' client URLs, space-separated: ``(xend-pool-etcd '...')``'s text."""
        return " ".join(member.client_url for member in self.members)

    def client_files(self, name: str) -> Issued:
        """A client certificate from the cluster's CA, for a xend (TLS clusters only)."""
        assert self.pki is not None, "a cluster without TLS takes no client certificates"
        return self.pki.issue(f"{self.token}-{name}")

    def xend_config(self, name: str) -> str:
        """The config lines that point a xend at this cluster (with TLS client files of its
        own, named after ``name``, when the cluster speaks TLS)."""
        lines = f"(xend-pool-etcd '{self.urls}')\n"
        if self.pki is not None:
            files = self.client_files(name)
            lines += (f"(xend-pool-etcd-ca {files.ca})\n(xend-pool-etcd-cert {files.cert})\n"
                      f"(xend-pool-etcd-key {files.key})\n")
        return lines

    # --- members up and down ------------------------------------------------------------------

    def _command(self, member: Member) -> list[str]:
        initial = ",".join(f"{other.name}={other.peer_url}" for other in self.members)
        argv = ["etcd", "--name", member.name, "--data-dir", str(member.folder / "data"),
                "--listen-client-urls", member.client_url,
                "--advertise-client-urls", member.client_url,
                "--listen-peer-urls", member.peer_url,
                "--initial-advertise-peer-urls", member.peer_url,
                # Read only at a member's first start: a restart goes on from its data.
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token,
                "--logger", "zap", "--log-outputs", "stderr", *TIMING]
        served = self._server.get(member.name)
        if served is not None:
            argv += ["--cert-file", str(served.cert), "--key-file", str(served.key),
                     "--trusted-ca-file", str(served.ca), "--client-cert-auth",
                     "--peer-cert-file", str(served.cert), "--peer-key-file", str(served.key),
                     "--peer-trusted-ca-file", str(served.ca), "--peer-client-cert-auth"]
        ns = member.place.ns
        return ["ip", "netns", "exec", ns, *argv] if ns else argv

    def _spawn(self, member: Member) -> None:
        assert not member.running, f"{member.name} runs already"
        member.folder.mkdir(mode=0o700, exist_ok=True)
        # etcd reads ETCD_* variables as flags: none of the caller's may reach a member.
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(self._command(member), stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=log, env=env)

    def _healthy(self, member: Member) -> bool:
        if not member.running:
            assert member.process is not None
            raise AssertionError(f"etcd {member.name} exited ({member.process.returncode})"
                                 + member.log_tail())
        try:
            with inside(member.place.ns), self._http(1.0) as http:
                reply = http.get(member.client_url + "/health")
            return reply.status_code == 200 and reply.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def _wait_healthy(self, members: Sequence[Member]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(members)
        while waiting:
            waiting = [member for member in waiting if not self._healthy(member)]
            if waiting and time.monotonic() > deadline:
                raise AssertionError(
                    f"etcd members {[m.name for m in waiting]} not healthy after "
                    f"{START_TIMEOUT:g} s" + "".join(m.log_tail() for m in waiting))
            if waiting:
                time.sleep(0.05)

    def start_all(self) -> None:
        """Start every member that is down, and wait until each is healthy (has a leader)."""
        down = [member for member in self.members if not member.running]
        for member in down:
            self._spawn(member)
        self._wait_healthy(down)

    def stop_all(self) -> None:
        """Kill every member: etcd is down for the whole pool (their data stay)."""
        for member in self.members:
            self.kill(member)

    def kill(self, member: Member) -> None:
        """SIGKILL ``member`` and wait until it is gone."""
        process, member.process = member.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self, member: Member) -> None:
        """Start ``member`` again (killing it first if it runs) on its data, and wait until
        it is healthy: back in the cluster, with a leader."""
        self.kill(member)
        self._spawn(member)
        self._wait_healthy([member])

    def member(self, name: str) -> Member:
        [found] = [member for member in self.members if member.name == name]
        return found

    # --- asking the members -----------------------------------------------------------------

    def _http(self, timeout: float) -> httpx.Client:
        # verify=False without TLS: loading the CA bundle for nothing costs 40 ms of CPU.
        # No proxy from the environment between a test and its own members.
        return httpx.Client(timeout=timeout, verify=self._tls or False, trust_env=False)

    def call(self, path: str, body: dict[str, Any], via: Member | None = None,
             origin: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """POST ``body`` to the gateway's ``path`` (``/v3/kv/put``...) of ``via`` (default:
        the first running member that answers), asked from inside ``origin`` (a namespace;
        default: ``via``'s own). Its JSON answer; ``EtcdUnreachable`` if none answered."""
        tried = [via] if via is not None else [m for m in self.members if m.running]
        failures = []
        for member in tried:
            ns = member.place.ns if origin is None else origin
            try:
                with inside(ns), self._http(timeout) as http:
                    reply = http.post(member.client_url + path, json=body)
            except httpx.HTTPError as error:
                failures.append(f"{member.name}: {error!r}")
                continue
            assert reply.status_code == 200, f"{member.name} {path}: {reply.text}"
            answer: dict[str, Any] = reply.json()
            return answer
        raise EtcdUnreachable("; ".join(failures) or "no member runs")

    def status(self, member: Member) -> dict[str, Any]:
        """``member``'s maintenance status (its id in header.member_id, the leader's id)."""
        return self.call("/v3/maintenance/status", {}, via=member)

    def leader(self, timeout: float = 10.0) -> Member:
        """The member that leads, once the running members agree on one that runs (a member
        cut off from the others answers too, with its own view: mend it first)."""
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[str, Member] = {}
            said: set[str] = set()
            for member in self.members:
                if not member.running:
                    continue
                with contextlib.suppress(EtcdUnreachable, AssertionError):
                    status = self.status(member)
                    ids[status["header"]["member_id"]] = member
                    said.add(status.get("leader", "0"))
            if len(said) == 1 and (leading := said.pop()) in ids:
                return ids[leading]
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader all running members agree on after "
                                     f"{timeout:g} s")
            time.sleep(0.05)

    def put(self, key: str, value: str | bytes, via: Member | None = None,
            origin: str | None = None, timeout: float = 2.0) -> int:
        """Put ``key`` = ``value``; the revision it made."""
        answer = self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)},
                           via=via, origin=origin, timeout=timeout)
        return int(answer["header"]["revision"])

    def get(self, key: str, via: Member | None = None) -> bytes | None:
        """``key``'s value, None when absent (a linearizable read: the leader's view)."""
        answer = self.call("/v3/kv/range", {"key": _b64(key)}, via=via)
        kvs = answer.get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def get_prefix(self, prefix: str, via: Member | None = None) -> dict[str, bytes]:
        """Every key starting with ``prefix`` and its value."""
        answer = self.call("/v3/kv/range", {"key": _b64(prefix),
                                            "range_end": _prefix_end(prefix)}, via=via)
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in answer.get("kvs", [])}

    # --- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every member and remove their data."""
        try:
            self.stop_all()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
