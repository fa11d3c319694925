"""What a started xend, or an xm command, has not loaded until it is used (issue 16).


A xend on the sim with the tests' default config, serving domains, must not hold the
libraries only some xends need: cryptography (TLS), jinja2 (the pages), PAM (logins),
pyroute2 (netlink: vnets, vif renames), httpx (not used in the daemon at all), the
qemu driver, and the transfer sessions and relocation. Each is loaded when first used
and then works: a page renders, a TLS listener gets its self-signed certificate and its
fingerprint, a notify URL gets its POSTs (on the standard library's http.client), a
save and a restore bring the domain back. The modules are read from the running
xend through its debug socket (``(sys.modules)``).

An xm command that makes one request (issue 16: a whole command in tens of
milliseconds) loads neither ``ssl`` nor ``http.client`` and the ``email`` package it
brings, nor pathlib, nor any HTTP library, nor the modules of other commands: each was
a few milliseconds of every command. Its modules are those the installed script's
process holds when it exits.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from tests.support.xend import XM, Xend
from xend_actors import sxp

pytestmark = pytest.mark.integration

NOT_AT_START = ("cryptography", "jinja2", "pam", "pyroute2", "httpx", "prometheus_client",
                "xend_actors.hypervisor.qemu", "xend_actors.transfer.session",
                "xend_actors.transfer.relocation", "etcd3gw", "requests")
NOT_IN_XM = ("ssl", "_ssl", "http", "email", "pathlib", "hashlib", "h11", "httpx", "wsproto",
             "jinja2", "werkzeug", "pykka", "xend_actors.events", "xend_actors.xm.create",
             "xend_actors.xm.configfile", "xend_actors.xm.console",
             "click.shell_completion")  # shell completion: only when the shell asks
# Runs the installed xm script as its own process would, then writes the modules it held.
XM_MODULES = ("import atexit, runpy, sys\n"
              "out, sys.argv = sys.argv[1], sys.argv[2:]\n"
              "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
BROWSER = {"Accept": "text/html", "User-Agent": "Mozilla/5.0"}
VIF = ["vif", ["mac", "aa:00:00:00:00:16"]]


def modules(home: XendHome) -> set[str]:
    """The modules xend holds now, as its debug port lists them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(home.debug_socket))
        sock.sendall(b"(sys.modules)\n")
        parser = sxp.Parser()
        while data := sock.recv(1 << 20):
            parser.input(data)
            while parser.ready():
                reply = parser.get_val()
                if sxp.name(reply) != "event":  # the port tells every event too
                    assert sxp.name(reply) == "ok", reply
                    return set(reply[1])
    raise AssertionError("the debug port closed before it listed the modules")


def loaded(names: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in names)


class Receiver:
    """A notify URL: a local HTTP server that keeps the bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the connection, as xend's poster may

            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> list[str]:
        return [str(sxp.child_value(sxp.parse(body), "name")) for body in list(self.bodies)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


def test_a_serving_sim_xend_has_not_loaded_what_it_did_not_use(
    fresh_xend: Callable[..., Xend], receiver: Receiver, tmp_path: Path,
) -> None:
    xend = fresh_xend()
    xend.start_sim("lazy1", VIF)
    assert "p" not in xend.state("lazy1")  # running, its vif attached
    assert "lazy1" in xend.names()
    at_start = modules(xend.home)
    assert [name for name in NOT_AT_START if loaded(at_start, name)] == []
    assert loaded(at_start, "xend_actors.hypervisor.sim")

    # The first page loads jinja2 and renders.
    page = xend.http.get("/xend/domain/", headers=BROWSER)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "lazy1" in page.text
    assert loaded(modules(xend.home), "jinja2")

    # A notify URL gets its POSTs without any HTTP library beyond the standard one.
    xend.ok(xend.post("/xend/node", op="notify", url=receiver.url))
    xend.ok(xend.op("lazy1", "pause"))
    xend.ok(xend.op("lazy1", "unpause"))
    wait_for(lambda: {"xend.domain.pause", "xend.domain.unpause"} <= set(receiver.names()),
             what="the pause and unpause POSTed to the notify URL")
    assert not loaded(modules(xend.home), "httpx")

    # The first save loads the transfer sessions; the domain comes back from its file.
    image = tmp_path / "lazy1.save"
    assert xend.ok(xend.op("lazy1", "save", file=str(image))) == "0"
    assert "lazy1" not in xend.names()
    restored = xend.ok(xend.post("/xend/domain/", op="restore", file=str(image)), 201)
    assert sxp.child_value(restored, "name") == "lazy1"
    assert "p" not in xend.state("lazy1")
    assert loaded(modules(xend.home), "xend_actors.transfer.session")


def test_a_tls_listener_makes_its_certificate_when_xend_starts_with_it(
    fresh_xend: Callable[..., Xend],
) -> None:
    xend = fresh_xend("(xend-tls yes)\n")
    cert = xend.home.dbroot / "tls" / "cert.pem"
    assert cert.exists()
    assert loaded(modules(xend.home), "cryptography")
    served = ssl.get_server_certificate(("127.0.0.1", xend.home.http_port))
    assert served.strip() == cert.read_text().strip()
    status = xend.home.xend("status")
    assert status.returncode == 0, status.stderr
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest().upper()
    assert f"SHA-256 fingerprint: {':'.join(digest[i:i + 2] for i in range(0, 64, 2))}" \
        in status.stdout


def xm_modules(tmp_path: Path, reach: dict[str, str], *args: str) -> tuple[str, set[str]]:
    """What ``xm ARGS`` printed, and the modules its process held when it exited."""
    assert XM is not None
    out = tmp_path / "modules"
    env = {k: v for k, v in os.environ.items() if k not in ("XEND", "XEND_UNIX_PATH")}
    done = subprocess.run([sys.executable, "-c", XM_MODULES, str(out), XM, *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**env, **reach})
    assert done.returncode == 0, done.stderr
    return done.stdout, set(out.read_text().split())


def test_an_xm_command_loads_only_what_its_one_request_needs(
    fresh_xend: Callable[..., Xend], tmp_path: Path,
) -> None:
    xend = fresh_xend()
    xend.start_sim("lazy2")
    home = xend.home
    unix = {"XEND_UNIX_PATH": str(home.unix_path)}
    tcp = {"XEND": f"127.0.0.1:{home.http_port}", "XEND_TOKEN": home.admin_token()}
    for reach, args in ((unix, ("list",)), (tcp, ("list",)), (unix, ("pause", "lazy2")),
                        (tcp, ("unpause", "lazy2"))):
        printed, held = xm_modules(tmp_path, reach, *args)
        assert [name for name in NOT_IN_XM if loaded(held, name)] == [], args
        # The command's own module, and no other command's (complete: its DOM argument).
        assert sorted(name for name in held if name.startswith("xend_actors.xm.")) \
            == ["xend_actors.xm.complete", "xend_actors.xm.domain", "xend_actors.xm.main"], args
        if args == ("list",):
            assert "lazy2" in printed and "Domain-0" in printed
    assert "p" not in xend.state("lazy2")  # paused over the socket, unpaused over TCP
