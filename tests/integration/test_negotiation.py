"""Who gets what from a real xend: SXP for programs and curl, JSON on asking, HTML for
browsers, and the browser-only rules for browsers only (issue 17).

curl itself is run, as the README's recipes run it: with its default ``Accept: */*``
and with no Accept at all, over TCP with an API token and over the Unix socket as root.
A JSON reply is read back into SXP (``sxp_json.from_json``) and compared with the SXP
reply to the same request: the same values, whatever the resource.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from tests.support.xend import Xend
from xend_actors import sxp
from xend_actors.web.csrf import FIELD
from xend_actors.web.sxp_json import from_json

pytestmark = pytest.mark.integration

CURL = "/usr/bin/curl"
JSON = {"Accept": "application/json"}
SXP = {"Accept": "application/sxp"}
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
           "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
MOVING = ("up_time", "cpu_time")  # what changes between two reads of a domain


def steady(value: sxp.Value) -> sxp.Value:
    """``value`` without the fields a clock moves, at any depth."""
    if isinstance(value, str):
        return value
    return [steady(item) for item in value
            if not (isinstance(item, list) and item and item[0] in MOVING)]


def curl(*args: str) -> tuple[int, str, str]:
    """Run curl (no shell); the status, the Content-Type and the body of its reply."""
    done = subprocess.run([CURL, "-sS", "-o", "-", "-w", "\n%{http_code} %{content_type}",
                           *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    body, _, tail = done.stdout.rpartition("\n")
    status, _, content_type = tail.partition(" ")
    return int(status), content_type, body


@pytest.fixture
def w1(xend: Xend) -> Iterator[str]:
    """A running sim domain w1 without devices."""
    xend.start_sim("w1")
    yield "w1"


@pytest.fixture
def w1_devices(xend: Xend, tmp_path: Path) -> Iterator[str]:
    """A running sim domain with a disk and two vifs, one with two addresses (so its
    devices hold a name twice, and its vif a field twice)."""
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as image:
        image.truncate(1 << 20)
    xend.start_sim("w1", ["vbd", ["uname", f"file:{disk}"], ["dev", "sda1"], ["mode", "w"]],
                   ["vif", ["mac", "aa:00:00:12:34:56"], ["ip", "10.0.0.5"],
                    ["ip", "10.0.0.6"]],
                   ["vif", ["mac", "aa:00:00:12:34:57"]])
    wait_for(lambda: all(sxp.child(vif, "evtchn") for vif in xend.devices("w1", "vifs")),
             30, "the guest's vifs to connect")  # then its info holds still
    yield "w1"


@pytest.fixture
def tcp(shared_home: XendHome) -> Iterator[httpx.Client]:
    """A client of the TCP port with an admin token that names no Accept of its own."""
    with httpx.Client(base_url=shared_home.url, timeout=30, headers={
            "Authorization": f"Bearer {shared_home.admin_token()}"}) as client:
        yield client


@pytest.mark.parametrize("accept", [[], ["-H", "Accept:"]], ids=["star-star", "no-accept"])
def test_curl_gets_sxp_and_its_ops_run_without_a_form_token(
        xend: Xend, shared_home: XendHome, w1: str, accept: list[str]) -> None:
    token = ["-H", f"Authorization: Bearer {shared_home.admin_token()}"]
    status, kind, body = curl(*accept, *token, f"{shared_home.url}/xend/domain/{w1}")
    assert (status, kind) == (200, "application/sxp")
    assert steady(sxp.parse(body)) == steady(xend.info(w1))

    status, kind, body = curl(*accept, *token, "-d", "op=pause",
                              f"{shared_home.url}/xend/domain/{w1}")
    assert (status, kind, body) == (200, "application/sxp", "0")
    assert xend.state(w1)[2] == "p"

    # As root over the Unix socket: no token at all.
    status, kind, body = curl(*accept, "--unix-socket", str(shared_home.unix_path),
                              "-d", "op=unpause", f"http://xend/xend/domain/{w1}")
    assert (status, kind, body) == (200, "application/sxp", "0")
    assert xend.state(w1)[2] == "-"

    status, kind, body = curl(*accept, *token, f"{shared_home.url}/xend/domain/nosuch")
    assert (status, kind) == (404, "application/sxp")
    assert sxp.parse(body) == ["xend.err",
                               "invalid domain:nosuch: no domain has that name or id"]


def test_the_original_clients_get_the_same_sxp_bytes(xend: Xend, shared_home: XendHome,
                                                     w1: str) -> None:
    """Python 2's httplib (the original xm) sends neither User-Agent nor Accept; a
    program with a User-Agent but no Accept, and today's xm (application/sxp), get the
    same bytes."""
    replies = set()
    for headers in (b"", b"User-Agent: Python-urllib/2.7\r\n",
                    b"Accept: application/sxp\r\nUser-Agent: xm\r\n"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(shared_home.unix_path))
            sock.sendall(b"GET /xend/domain/ HTTP/1.0\r\nHost: localhost:8000\r\n"
                         + headers + b"\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nContent-Type: application/sxp\r\n" in head + b"\r\n"
        replies.add(body)
    assert len(replies) == 1
    assert sorted(sxp.parse(replies.pop())) == ["Domain-0", "w1"]


@pytest.mark.parametrize("path", [
    "/xend/", "/xend/domain/", "/xend/domain/?detail=1", "/xend/domain/w1",
    "/xend/domain/w1?op=vifs", "/xend/domain/w1?op=vbds", "/xend/domain/Domain-0",
    "/xend/node/", "/xend/console/", "/xend/event/", "/xend/vnet/",
])
def test_json_maps_back_to_the_values_of_the_sxp(tcp: httpx.Client, w1_devices: str,
                                                 path: str) -> None:
    as_sxp = tcp.get(path, headers=SXP)
    as_json = tcp.get(path, headers=JSON)
    assert as_sxp.status_code == as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    assert steady(from_json(as_json.json())) == steady(sxp.parse(as_sxp.text))


def test_json_long_polls_map_back_to_the_same_events(xend: Xend, tcp: httpx.Client,
                                                     w1_devices: str) -> None:
    since = {"since": max(0, xend.events.last() - 20), "timeout": 0}
    as_sxp = sxp.parse(tcp.get("/xend/event/", params=since, headers=SXP).text)
    as_json = from_json(tcp.get("/xend/event/", params=since, headers=JSON).json())
    assert as_sxp and as_json[:len(as_sxp)] == as_sxp  # newer events may have come


def test_text_replies_are_one_json_string(tcp: httpx.Client) -> None:
    as_text = tcp.get("/xend/node/dmesg", headers=SXP)
    as_json = tcp.get("/xend/node/dmesg", headers=JSON)
    assert as_text.headers["content-type"].startswith("text/plain")
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == as_text.text and as_text.text


def test_json_reads_as_plain_json(tcp: httpx.Client, w1_devices: str) -> None:
    """What a jq user reads: records are objects, lists arrays, atoms strings."""
    info = tcp.get("/xend/domain/w1", headers=JSON).json()["domain"]
    assert info["name"] == "w1" and info["memory"] == "32" and info["state"][2] == "-"
    assert info["console"]["status"] == "listening"
    devices = info["devices"]  # a collection: an array of {TYPE: INFO}
    assert sorted(kind for device in devices for kind in device) == ["vbd", "vif", "vif"]
    vbd = next(device["vbd"] for device in devices if "vbd" in device)
    assert vbd["dev"] == "sda1" and vbd["mode"] == "w"
    vif = next(device["vif"] for device in devices if "vif" in device)
    assert {"ip": "10.0.0.6"} in vif  # two ips: its fields are an array of {NAME: VALUE}
    vm = info["config"]["vm"]  # a collection too: its fields, in their order
    assert vm[0] == {"name": "w1"}
    image = next(field["image"] for field in vm if "image" in field)
    assert image["linux"]["kernel"] == "/boot/vmlinuz-sim"
    assert sorted(tcp.get("/xend/domain/", headers=JSON).json()) == ["Domain-0", "w1"]
    detail = tcp.get("/xend/domain/", params={"detail": 1}, headers=JSON).json()
    assert sorted(entry["domain"]["name"] for entry in detail) == ["Domain-0", "w1"]
    node = tcp.get("/xend/node/", headers=JSON).json()["node"]
    assert int(node["memory"]) > 0 and node["host"]


def test_json_ops_and_events(xend: Xend, tcp: httpx.Client, w1: str) -> None:
    since = xend.events.last()
    paused = tcp.post("/xend/domain/w1", data={"op": "pause"}, headers=JSON)
    assert (paused.status_code, paused.json()) == (200, "0")
    created = tcp.post("/xend/domain/", headers=JSON, data={
        "op": "create", "config": "(vm (name w2) (memory 32) "
                                  "(image (linux (kernel /boot/vmlinuz-sim))))"})
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith("/xend/domain/w2")
    assert created.json()["domain"]["name"] == "w2"
    polled = tcp.get("/xend/event/", params={"since": since, "timeout": 0},
                     headers=JSON).json()
    names = [record["event"]["name"] for record in polled]
    assert "xend.domain.pause" in names and "xend.domain.create" in names


@pytest.mark.parametrize(("method", "path", "data", "status"), [
    ("GET", "/xend/domain/nosuch", None, 404),
    ("POST", "/xend/domain/w1", {"op": "bogus"}, 501),
    ("POST", "/xend/domain/w1", {"op": "shutdown", "reason": "sideways"}, 400),
    ("POST", "/xend/domain/", {"op": "create", "config": "(vm (name"}, 400),
    ("PUT", "/xend/domain/w1", None, 405),
])
def test_json_errors_keep_the_status_and_the_message(
        tcp: httpx.Client, w1: str, method: str, path: str, data: dict | None,
        status: int) -> None:
    as_sxp = tcp.request(method, path, data=data, headers=SXP)
    as_json = tcp.request(method, path, data=data, headers=JSON)
    assert as_sxp.status_code == as_json.status_code == status
    assert as_json.reason_phrase == as_sxp.reason_phrase
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == {"error": sxp.parse(as_sxp.text)[1]}


def test_the_gate_answers_json_to_json_clients(shared_home: XendHome) -> None:
    with httpx.Client(base_url=shared_home.url, timeout=30) as anonymous:
        missing = anonymous.get("/xend/domain/", headers=JSON)
        wrong = anonymous.get("/xend/domain/", headers={
            **JSON, "Authorization": "Bearer not-a-token-of-this-xend"})
    assert missing.status_code == 401 and "Authentication required" in missing.json()["error"]
    assert wrong.status_code == 401 and wrong.json() == {"error": "Unknown or wrong API token"}
    assert missing.headers["www-authenticate"].startswith("Bearer")


def test_the_root_leads_to_xend_for_anyone(shared_home: XendHome) -> None:
    with httpx.Client(base_url=shared_home.url, timeout=30) as anonymous:
        root = anonymous.get("/")
        assert (root.status_code, root.headers["location"]) == (302, "/xend/")
        assert anonymous.get("/xend/").status_code == 401  # where the token is asked
        icon = anonymous.get("/favicon.ico")  # a browser's, asked with no cookie
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")


def test_a_browser_gets_pages_and_its_forms_need_their_token(
        xend: Xend, shared_home: XendHome, tcp: httpx.Client, w1: str) -> None:
    page = tcp.get("/xend/domain/w1", headers=BROWSER)
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text and "w1" in page.text
    token = page.text.split(f'name="{FIELD}" value="', 1)[1].split('"', 1)[0]
    own = {**BROWSER, "Origin": shared_home.url}

    refused = tcp.post("/xend/domain/w1", data={"op": "pause"}, headers=own)
    assert refused.status_code == 403 and "token" in refused.text
    assert refused.headers["content-type"].startswith("text/html")
    assert xend.state(w1)[2] == "-"

    done = tcp.post("/xend/domain/w1", data={"op": "pause", FIELD: token}, headers=own)
    assert done.status_code == 303, done.text
    assert xend.state(w1)[2] == "p"


@pytest.mark.parametrize("accept", [None, "*/*", "application/sxp", "application/json",
                                    BROWSER["Accept"]])
@pytest.mark.parametrize("foreign", [{"Origin": "http://evil.example"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_a_cross_site_request_changes_nothing_whatever_it_accepts(
        xend: Xend, tcp: httpx.Client, w1: str, accept: str | None,
        foreign: dict[str, str]) -> None:
    headers = {**({"Accept": accept} if accept else {}), **foreign}
    if accept == BROWSER["Accept"]:
        headers["User-Agent"] = BROWSER["User-Agent"]
    refused = tcp.post("/xend/domain/w1", data={"op": "pause"}, headers=headers)
    assert refused.status_code == 403, refused.text
    assert "refused" in refused.text
    if accept == "application/json":
        assert "refused" in refused.json()["error"]
    assert xend.state(w1)[2] == "-"
