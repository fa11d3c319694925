"""Two test hosts for migrations: two network namespaces joined by a veth pair, a xend in
each, the destination's relocation server on and its hosts-allow naming the source's
address. The two xends speak mutual TLS, each with a certificate for its address from
one test CA (``tests/support/pki.py``), unless a pair is asked for plain TCP. The tests
of a module share a pair (``HostPairs``); the tests talk to both xends over their Unix
sockets and to their consoles from inside their namespaces.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Generic, TypeVar

import httpx

from tests.support.home import new_home
from tests.support.netns import SIM_SHELL
from tests.support.pki import Authority, Issued
from tests.support.sharing import Reaper
from tests.support.xend import Xend, sim_vm
from xend_actors import sxp
from xend_actors.client import XendClient

SUBNET = "10.231.7"
SOURCE, DESTINATION = f"{SUBNET}.1", f"{SUBNET}.2"
PLAIN = "(xend-relocation-tls no)\n"


class Host:
    """One test host: a network namespace with a xend in it."""

    def __init__(self, address: str, extra: str = "") -> None:
        self.address = address
        self.tls: Issued | None = None  # the certificate it presents to other xends, if any
        self.ns = f"xm-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.ip("link", "set", "lo", "up")
        self.home = new_home(extra)
        self.home.netns = self.ns
        self.xend = Xend(self.home)
        self._client: XendClient | None = None

    def ip(self, *args: str) -> None:
        done = subprocess.run(["ip", "-n", self.ns, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        self.xend.start()
        self.close_client()

    def client(self) -> XendClient:
        """This host's XendClient (one, kept: making one costs 40 ms of CPU)."""
        if self._client is None:
            self._client = XendClient(unix_path=self.home.unix_path, timeout=120)
        return self._client

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.xend.post(path, **fields)

    def names(self) -> list[str]:
        return list(self.client().xend_domains())  # type: ignore[arg-type]

    def info(self, dom: str) -> sxp.Value:
        return self.client().xend_domain(dom)

    def start_guest(self, name: str) -> int:
        client = self.client()
        info = client.xend_domain_create(sim_vm(name))
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
        return self.client().xend_console_log(port).data

    def events(self) -> list[str]:
        """The events of this xend since the test began."""
        return self.xend.events.lines()

    def sessions(self) -> list[str]:
        return self.xend.sessions()

    def kill_xend(self) -> None:
        self.home.kill9()

    def begin(self) -> None:
        """Ready for a test: xend running, its events marked."""
        if not self.home.alive():
            self.home.stop()
            self.start()
        else:
            self.xend.reconnect()
            self.close_client()
        self.xend.events.mark()

    def clean(self) -> None:
        """After a test: xend running (again) with Domain-0 only."""
        if not self.home.alive():
            self.home.stop()
            self.start()
        self.xend.destroy_all_but({"Domain-0"})

    def tear_down(self) -> None:
        self.xend.close()
        self.close_client()
        try:
            self.home.tear_down()
        finally:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


H = TypeVar("H", bound=Host)


Kind = tuple[str, bool]  # a pair's hosts-allow regex, and whether it speaks TLS


class HostPairs(Generic[H]):
    """Source and destination hosts joined by a veth, one pair for each ``allow`` (the
    regex of the destination's ``xend-relocation-hosts-allow``) and ``tls`` (mutual TLS
    with certificates from ``pki``, or plain TCP), which the tests of a module share:
    ``take`` readies a pair for a test, ``give_back`` leaves its xends running with
    Domain-0 only (a pair that cannot be cleaned is replaced)."""

    def __init__(self, kind: type[H], reaper: Reaper) -> None:
        self.kind = kind
        self.reaper = reaper
        self.pairs: dict[Kind, tuple[H, H]] = {}
        self.taken: list[Kind] = []
        self.folder = Path(tempfile.mkdtemp(prefix="xend-pki-"))
        self.pki = Authority(self.folder / "ca")

    def take(self, allow: str = re.escape(SOURCE), tls: bool = True) -> tuple[H, H]:
        key = (allow, tls)
        if key not in self.pairs:
            self.pairs[key] = self._make(allow, tls)
        self.taken.append(key)
        for host in self.pairs[key]:
            host.begin()
        return self.pairs[key]

    def _host(self, address: str, tls: bool, extra: str = "") -> H:
        """A host at ``address``; with ``tls``, presenting a certificate for it (its IP SAN)
        from ``pki``, files of its own."""
        if not tls:
            return self.kind(address, PLAIN + extra)
        issued = self.pki.issue(f"xend-{address}-{secrets.token_hex(2)}", ips=(address,))
        host = self.kind(address, issued.relocation_config() + extra)
        host.tls = issued
        return host

    def _make(self, allow: str, tls: bool) -> tuple[H, H]:
        source = self._host(SOURCE, tls)
        destination = self._host(DESTINATION, tls, "(xend-relocation-server yes)\n"
                                 f"(xend-relocation-address {DESTINATION})\n"
                                 + sxp.show(["xend-relocation-hosts-allow", allow]))
        try:
            veth = f"xv{secrets.token_hex(4)}"
            subprocess.run(["ip", "link", "add", f"{veth}a", "netns", source.ns, "type", "veth",
                            "peer", "name", f"{veth}b", "netns", destination.ns], check=True)
            for host, end in ((source, "a"), (destination, "b")):
                host.ip("addr", "add", f"{host.address}/24", "dev", f"{veth}{end}")
                host.ip("link", "set", f"{veth}{end}", "up")
                host.start()
        except BaseException:
            for host in (source, destination):
                self.reaper.submit(host.ns, host.tear_down)
            raise
        return source, destination

    def give_back(self) -> None:
        taken, self.taken = self.taken, []
        for allow in taken:
            pair = self.pairs.get(allow)
            if pair is None:
                continue
            try:
                for host in pair:
                    host.clean()
            except BaseException:
                del self.pairs[allow]
                for host in pair:
                    self.reaper.submit(host.ns, host.tear_down)
                raise

    def close(self) -> None:
        for pair in self.pairs.values():
            for host in pair:
                self.reaper.submit(host.ns, host.tear_down)
        self.pairs.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
