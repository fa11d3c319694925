"""Vnets through a real xend: HTTP, XendClient and xm; the store across a restart.

Creating a vnet makes links, so every xend here runs inside a network namespace of the
test's own (``ip netns exec NS xend start``) and is reached over its Unix socket, which
crosses namespaces; the host's own network is never touched. The namespace helpers
are the e2e vnet tests'.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_vnet import Namespaces, Netns, netns_usable, two_hosts, udp_reply
from tests.support.home import XendHome
from tests.support.processes import xend_command
from tests.support.xend import XM
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError

pytestmark = pytest.mark.integration
_WHY = netns_usable()
if _WHY:
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=_WHY)]

VNET97 = Path(__file__).parents[1] / "data" / "reference-examples" / "vnet97.sxp"


@dataclass
class NsXend:
    """A xend running inside the namespace ``ns``."""

    home: XendHome
    ns: Netns

    def xend(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns.name, *xend_command(),
                               "--config", str(self.home.config_file), *args],
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def start(self) -> None:
        done = self.xend("start")
        assert done.returncode == 0, done.stderr

    def client(self) -> XendClient:
        return XendClient(unix_path=self.home.unix_path)

    def http(self) -> httpx.Client:
        return self.home.unix_http()

    def xm(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        assert XM, "the xm script is not installed beside this Python (pip install -e .)"
        done = subprocess.run([XM, "--unix", str(self.home.unix_path), *args],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        if ok:
            assert (done.returncode, done.stderr) == (0, ""), (args, done.stderr)
        return done


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def ns_xend(namespaces: Namespaces,
            xend_home: Callable[..., XendHome]) -> Callable[[Netns | None], NsXend]:
    """Starts a xend in the given namespace, or in a new one; xend_home stops it, and
    it is torn down before ``namespaces`` (set up after it)."""

    def start(ns: Netns | None = None) -> NsXend:
        made = NsXend(xend_home(), ns or namespaces.new("x"))
        made.start()
        return made

    return start


def post(xend: NsXend, path: str, **fields: str) -> httpx.Response:
    with xend.http() as http:
        return http.post(path, data=fields)


def get(xend: NsXend, path: str) -> httpx.Response:
    with xend.http() as http:
        return http.get(path)


def error_of(reply: httpx.Response) -> tuple[int, str]:
    value = sxp.parse(reply.text)
    assert sxp.name(value) == "xend.err", reply.text
    return reply.status_code, sxp.child0(value)


def test_create_list_show_and_delete(ns_xend: Callable[..., NsXend], tmp_path: Path) -> None:
    xend = ns_xend()
    client = xend.client()
    assert client.xend_vnets() == []
    assert xend.xm("vnet-list").stdout == ""

    done = xend.xm("vnet-create", str(VNET97))
    assert done.stdout == "Created vnet 97: bridge vnet97, vnetif vnetif97\n"
    reply = post(xend, "/xend/vnet/", op="create",
                 config="(vnet (id 98) (peers 10.9.0.2 10.9.0.3) (port 8472))")
    assert reply.status_code == 201, reply.text
    assert reply.headers["location"].endswith("/xend/vnet/98")
    config98 = ["vnet", ["id", "98"], ["bridge", "vnet98"], ["vnetif", "vnetif98"],
                ["security", "none"], ["port", "8472"], ["peers", "10.9.0.2", "10.9.0.3"]]
    assert sxp.parse(reply.text) == config98

    assert client.xend_vnets() == ["97", "98"]
    assert client.xend_vnet(98) == config98
    assert client.xend_vnet("97") == ["vnet", ["id", "97"], ["bridge", "vnet97"],
                                      ["vnetif", "vnetif97"], ["security", "none"],
                                      ["port", "4789"]]
    assert client.xend_vnets(detail=True) == [client.xend_vnet(97), config98]
    assert xend.xm("vnet-list").stdout == "97\n98\n"
    assert xend.xm("vnet-list", "-l").stdout == \
        "".join(sxp.pretty(config) for config in client.xend_vnets(detail=True))
    assert (xend.home.dbroot / "vnet" / "98").exists()

    links = xend.ns.links()
    for n in (97, 98):
        assert links[f"vnet{n}"]["kind"] == "bridge" and links[f"vnet{n}"]["up"]
        assert links[f"vnetif{n}"]["master"] == f"vnet{n}"
    assert xend.ns.fdb_peers("vnetif98") == ["10.9.0.2", "10.9.0.3"]

    assert client.xend_vnet_delete(98) == "0"
    assert xend.xm("vnet-delete", "97").stdout == ""
    assert client.xend_vnets() == []
    assert not {"vnet97", "vnetif97", "vnet98", "vnetif98"} & set(xend.ns.links())
    assert not (xend.home.dbroot / "vnet" / "98").exists()
    names = [sxp.child_value(event, "name") for event in client.xend_events(0, 0)]
    assert [name for name in names if name.startswith("xend.vnet.")] == [
        "xend.vnet.create", "xend.vnet.create", "xend.vnet.delete", "xend.vnet.delete"]


def test_bad_input_unknown_ids_and_clashes(ns_xend: Callable[..., NsXend],
                                           tmp_path: Path) -> None:
    xend = ns_xend()
    before = xend.ns.links()
    bad = [
        ("(vm (name x))", "vnet config: expected (vnet (id N) ...)"),
        ("(vnet (id 1) (color red))", "vnet: unknown field (color red)"),
        ("(vnet (id 1) (security conf))", "vnet: security conf is not supported; only none "
                                          "(VXLAN neither authenticates nor encrypts)"),
        ("(vnet (id 1)", "line 1, column 13: unexpected EOF"),
        ("(vnet (id 1) (dev nosuchdev))", "vnet 1: no network device nosuchdev (its dev)"),
    ]
    for config, message in bad:
        assert error_of(post(xend, "/xend/vnet/", op="create", config=config)) == \
            (400, message), config
    assert error_of(post(xend, "/xend/vnet/", op="create")) == \
        (400, "Missing parameter: config")
    assert xend.ns.links() == before
    assert xend.client().xend_vnets() == []

    assert post(xend, "/xend/vnet/", op="create", config="(vnet (id 5))").status_code == 201
    assert error_of(post(xend, "/xend/vnet/", op="create", config="(vnet (id 5))")) == \
        (409, "vnet 5 already exists")
    assert error_of(post(xend, "/xend/vnet/", op="create",
                         config="(vnet (id 6) (bridge vnet5))")) == \
        (409, "vnet 6: vnet5 already used by vnet 5")
    for path in ("/xend/vnet/7", "/xend/vnet/x", "/xend/vnet/5x"):
        assert error_of(get(xend, path)) == (404, f"no vnet {path.rsplit('/', 1)[1]}")
        assert error_of(post(xend, path, op="delete")) == \
            (404, f"no vnet {path.rsplit('/', 1)[1]}")
    assert post(xend, "/xend/vnet/5", op="explode").status_code == 501

    bad_file = tmp_path / "bad.sxp"
    bad_file.write_text("(vnet (id 0))\n")
    for args, message in [
        (("vnet-create", str(bad_file)), "Error: vnet: invalid id: 0 (a whole number from 1 "
                                         "to 16777215, the VXLAN VNI)\n"),
        (("vnet-create", str(tmp_path / "missing.sxp")), "Error: Invalid value for 'CONFIG'"),
        (("vnet-delete", "77"), "Error: no vnet 77\n"),
        (("vnet-create", str(VNET97)), None),
        (("vnet-create", str(VNET97)), "Error: vnet 97 already exists\n"),
    ]:
        done = xend.xm(*args, ok=message is None)
        if message is not None:
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
            assert done.stderr.startswith(message), done.stderr
    with pytest.raises(XendError) as caught:
        xend.client().xend_vnet(12)
    assert (caught.value.status, caught.value.message) == (404, "no vnet 12")


def test_vnets_are_kept_and_come_back_after_a_restart(ns_xend: Callable[..., NsXend]) -> None:
    xend = ns_xend()
    client = xend.client()
    client.xend_vnet_create(["vnet", ["id", "31"], ["peers", "10.9.0.2"]])
    client.xend_vnet_create(sxp.parse("(vnet (id 32) (bridge br32) (vnetif vx32))"))
    assert xend.xend("stop").returncode == 0
    # Stopping xend leaves the vnets (domains on them keep running) ...
    links = xend.ns.links()
    assert links["vnetif31"]["master"] == "vnet31" and links["vx32"]["master"] == "br32"
    # ... and a start makes what went missing meanwhile (a host reboot, an operator).
    xend.ns.ip("link", "del", "vnetif31")
    xend.ns.ip("link", "del", "br32")
    xend.start()
    assert client.xend_vnets() == ["31", "32"]
    links = xend.ns.links()
    assert links["vnetif31"]["master"] == "vnet31" and links["vx32"]["master"] == "br32"
    assert links["br32"]["up"] and links["br32"]["alias"] == "xend vnet 32"
    assert xend.ns.fdb_peers("vnetif31") == ["10.9.0.2"]

    # A vnet whose links cannot be made at start is logged and kept, not fatal.
    xend.ns.ip("link", "set", "vx32", "nomaster")
    xend.ns.ip("link", "set", "vx32", "alias", "someone else's")
    assert xend.xend("restart").returncode == 0
    assert client.xend_vnets() == ["31", "32"]
    assert "Vnet 32 not restored: vnet 32: network device vx32 exists and was not made " \
        "for this vnet" in xend.home.logfile.read_text()
    client.xend_vnet_delete(32)  # removes what is its own (the bridge), leaves vx32
    assert "br32" not in xend.ns.links() and "vx32" in xend.ns.links()


def test_two_xends_on_two_hosts_join_their_guests(namespaces: Namespaces,
                                                  ns_xend: Callable[..., NsXend]) -> None:
    a, b = two_hosts(namespaces)
    for host, other in ((a, b), (b, a)):
        xend = ns_xend(host.ns)
        xend.client().xend_vnet_create(
            sxp.parse(f"(vnet (id 500) (peers {other.underlay}) (local {host.underlay}))"))
        host.plug_guest("vnet500")
    assert udp_reply(namespaces, a, b) == "HELLO OVER THE VNET"
