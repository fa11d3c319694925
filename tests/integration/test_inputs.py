"""Bad input against a real xend: every one refused at once with a clear 4xx, nothing
read without bound, no file replaced that xend did not write, and the log one line
for each (issue 15, items 1 and 10)."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import wait_for
from tests.support.xend import Xend, run_xm, sim_vm
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.domain.config import NAME_RULE

pytestmark = pytest.mark.integration

QUICK = 10.0  # seconds: a refusal comes at once, or the test fails (never waits forever)
RSS_LIMIT_KB = 400 << 10  # xend's resident memory stays far below this (idle: ~60 MB)


@pytest.fixture(scope="module")
def shared_xend_config() -> str:
    """Migrations out go over plain TCP: this xend has no TLS certificates."""
    return "(xend-relocation-tls no)\n"


@pytest.fixture
def quick(xend: Xend) -> Iterator[httpx.Client]:
    """A client of the xend that waits no more than ``QUICK`` for any reply."""
    with xend.home.unix_http(timeout=QUICK) as client:
        yield client


def rss_kb(xend: Xend) -> int:
    pid = xend.home.pid()
    assert pid is not None, "xend is not running"
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS:")))


def refused(reply: httpx.Response, status: int = 400) -> str:
    return Xend.error(reply, status)


def log_after(xend: Xend, offset: int) -> str:
    with open(xend.home.logfile, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def log_size(xend: Xend) -> int:
    return xend.home.logfile.stat().st_size


# --- restore reads regular files only, and no more than they say -------------------------


def saved(xend: Xend, folder: Path, name: str) -> Path:
    xend.start_sim(name)
    image = folder / f"{name}.save"
    assert xend.ok(xend.post(f"/xend/domain/{name}", op="save", file=str(image))) == "0"
    return image


def test_restore_refuses_a_device_a_fifo_a_socket_and_a_symlink_at_once(
        xend: Xend, quick: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.save"
    os.mkfifo(fifo)
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "socket.save"))
    link = tmp_path / "link.save"
    link.symlink_to(saved(xend, tmp_path, "target"))  # a good save file behind it
    names = xend.names()
    expected = {
        "/dev/zero": "it is a character device, not a save file",
        str(fifo): "it is a FIFO, not a save file",
        str(tmp_path / "socket.save"): "it is a socket",
        str(link): "it is a symbolic link",
    }
    try:
        for path, why in expected.items():
            began = time.monotonic()
            message = refused(quick.post("/xend/domain/", data={"op": "restore", "file": path}))
            assert f"cannot read {path}: {why}" in message, message
            assert time.monotonic() - began < QUICK
    finally:
        listening.close()
    assert xend.names() == names  # nothing restored: not even the save behind the link
    assert rss_kb(xend) < RSS_LIMIT_KB
    assert xend.sessions() == []


def test_xm_restore_of_a_fifo_says_why_at_once(xend: Xend, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    began = time.monotonic()
    done = run_xm(xend.home, "restore", str(fifo))
    assert time.monotonic() - began < QUICK
    assert done.returncode == 1
    assert done.stderr == f"Error: cannot read {fifo}: it is a FIFO, not a save file\n"


def test_restore_reads_no_more_than_a_save_file_can_hold(
        xend: Xend, quick: httpx.Client, tmp_path: Path) -> None:
    image = saved(xend, tmp_path, "big")
    grown = tmp_path / "grown.save"
    with open(grown, "wb") as out:  # a good file, then a GiB more, sparse
        out.write(image.read_bytes())
        out.truncate(image.stat().st_size + (1 << 30))
    message = refused(quick.post("/xend/domain/", data={"op": "restore", "file": str(grown)}))
    assert "trailing garbage" in message
    assert rss_kb(xend) < RSS_LIMIT_KB


# --- save replaces nothing but a save file -------------------------------------------------


def test_save_never_replaces_a_file_that_is_not_a_save_file(
        xend: Xend, tmp_path: Path) -> None:
    xend.start_sim("keep")
    precious = tmp_path / "notes.txt"
    precious.write_text("a file xend did not write\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("behind a link\n")
    link = tmp_path / "link.save"
    link.symlink_to(elsewhere)

    message = refused(xend.op("keep", "save", file=str(precious)), 409)
    assert message == (f"cannot save to {precious}: it exists and is not a "
                       "xend save file; remove it or choose another file")
    message = refused(xend.op("keep", "save", file=str(link)))
    assert "it is a symbolic link" in message
    message = refused(xend.op("keep", "save", file="/dev/null"))
    assert "it is a character device" in message

    assert precious.read_text() == "a file xend did not write\n"
    assert link.is_symlink() and elsewhere.read_text() == "behind a link\n"
    assert "keep" in xend.names()  # nothing was done to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link.save",
                                                          "notes.txt"]
    # An earlier save file is replaced, as before.
    image = tmp_path / "keep.save"
    assert xend.ok(xend.op("keep", "save", file=str(image))) == "0"
    xend.ok(xend.post("/xend/domain/", op="restore", file=str(image)), 201)
    assert xend.ok(xend.op("keep", "save", file=str(image))) == "0"


# --- configs: names URLs carry, maxmem ------------------------------------------------------


@pytest.mark.parametrize("name", ["/x", "x/", "a//b", ".", "..", "a/../b"])
def test_a_name_no_url_can_carry_is_refused_saying_what_is_allowed(
        xend: Xend, name: str) -> None:
    names = xend.names()
    message = refused(xend.post("/xend/domain/", op="create",
                                config=sxp.show(sim_vm(name))))
    assert message == f"invalid vm name {name!r}: {NAME_RULE}"
    assert "letters, digits and _ . : + - /" in message
    assert xend.names() == names


def test_maxmem_below_memory_is_refused(xend: Xend) -> None:
    names = xend.names()
    config = sim_vm("small", ["maxmem", "10"], memory=64)
    message = refused(xend.post("/xend/domain/", op="create", config=sxp.show(config)))
    assert message == "invalid maxmem: 10 MB is less than the memory, 64 MB"
    assert xend.names() == names


# --- ops: values past their range, peers, methods ---------------------------------------------


@pytest.mark.parametrize("key", ["1114112", "9" * 20, "127"])
def test_a_sysrq_key_code_out_of_range_is_a_400(xend: Xend, key: str) -> None:
    xend.start_sim("rq")
    message = refused(xend.op("rq", "shutdown", reason="sysrq", key=key))
    assert "invalid sysrq key code" in message
    assert "rq" in xend.names()


def test_a_migration_to_a_closed_port_is_a_bad_gateway_and_the_domain_runs_on(
        xend: Xend) -> None:
    xend.start_sim("mover")
    closed = free_port()
    reply = xend.op("mover", "migrate", destination=f"127.0.0.1:{closed}")
    message = refused(reply, 502)
    assert f"cannot connect to the relocation port 127.0.0.1:{closed}" in message
    assert "mover" in xend.names()
    assert xend.sessions() == []


@pytest.mark.parametrize("path", ["/xend/", "/xend/device/", "/xend/console/",
                                  "/xend/node/log"])
def test_post_to_a_directory_without_ops_is_405(xend: Xend, path: str) -> None:
    assert refused(xend.post(path, op="anything"), 405).startswith("Method not allowed")


def raw(xend: Xend, request: bytes) -> bytes:
    """What xend answers ``request`` on a connection of its own, until it closes it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(QUICK)
        sock.connect(str(xend.home.unix_path))
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_with_both_content_length_and_transfer_encoding_is_refused(
        xend: Xend) -> None:
    names = xend.names()
    body = b"0\r\n\r\nPOST /xend/domain/ HTTP/1.1\r\nHost: x\r\n\r\n"  # smuggled after it
    answer = raw(xend, b"POST /xend/domain/ HTTP/1.1\r\nHost: localhost\r\n"
                       b"Content-Type: application/x-www-form-urlencoded\r\n"
                       b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
                       + body)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"both Content-Length and Transfer-Encoding" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # the smuggled request was not served
    assert xend.names() == names


def test_a_body_past_the_limit_is_a_413(xend: Xend) -> None:
    config = "(vm (name big) " + "(x " + "y" * (2 << 20) + "))"
    refused(xend.post("/xend/domain/", op="create", config=config), 413)
    assert "big" not in xend.names()


# --- logs: one line for an expected error; a dead notify URL once -------------------------


def test_a_404_is_one_log_line_without_a_traceback(xend: Xend) -> None:
    start = log_size(xend)
    refused(xend.get("/xend/domain/no-such-domain"), 404)
    refused(xend.op("no-such-domain", "pause"), 404)
    wait_for(lambda: log_after(xend, start).count("no-such-domain") >= 2,
             what="the 404s logged")
    logged = log_after(xend, start)
    assert "Traceback" not in logged
    lines = [line for line in logged.splitlines()
             if "no-such-domain" in line and " EVENT> " not in line]  # the audit's event
    assert len(lines) == 2, logged  # the GET's, and the op's in the audit trail
    assert "GET /xend/domain/no-such-domain: 404 invalid domain:no-such-domain" in lines[0]
    assert "ran pause on /xend/domain/no-such-domain" in lines[1]


class Hook:
    """An HTTP server on ``port`` that takes every POST, from the moment it starts."""

    def __init__(self, port: int) -> None:
        self.bodies: list[bytes] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_dead_notify_url_is_logged_once_and_its_recovery_too(
        xend: Xend) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    start = log_size(xend)
    with XendClient(unix_path=xend.home.unix_path) as client:
        assert client.xend_node_notify(url) == "0"
        try:
            client.xend_event_inject(["probe.dead", "1"])
            wait_for(lambda: f"Notify {url}: event" in log_after(xend, start), timeout=20,
                     what="the dead URL reported")
            for n in range(20):  # each would have been a warning of its own
                client.xend_event_inject(["probe.dead", str(n)])
            hook = Hook(port)
            try:
                def delivered() -> bool:
                    client.xend_event_inject(["probe.alive", "1"])
                    return any(b"probe.alive" in body for body in hook.bodies)
                wait_for(delivered, timeout=30, what="the URL retried once it answers")
                wait_for(lambda: "answering again" in log_after(xend, start),
                         what="the recovery logged")
            finally:
                hook.close()
        finally:
            client.xend_node_unnotify(url)
    about = [line for line in log_after(xend, start).splitlines() if f"Notify {url}" in line]
    warnings = [line for line in about if " WARNING " in line]
    assert len(warnings) == 1, about
    assert "dropped until it answers again" in warnings[0]
    assert any("answering again after" in line and "events were dropped" in line
               for line in about), about


def test_headers_uploads_and_sxp_past_their_limits_are_refused(xend: Xend) -> None:
    many = b"".join(b"X-Pad-%d: 1\r\n" % n for n in range(200))
    answer = raw(xend, b"GET /xend/ HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    long_line = b"X-Long: " + b"y" * (70 << 10) + b"\r\n"
    answer = raw(xend, b"GET /xend/ HTTP/1.1\r\nHost: localhost\r\n" + long_line + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    answer = raw(xend, b"GET /xend/?" + b"a" * (70 << 10) + b" HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]

    upload = {"config": ("vm.sxp", b"(vm " + b"x" * (2 << 20) + b")")}
    reply = xend.http.post("/xend/domain/", data={"op": "create"}, files=upload)
    refused(reply, 413)
    deep = "(" * 100 + ")" * 100
    assert "nesting deeper than 64" in refused(xend.post("/xend/domain/", op="create",
                                                          config=deep))
    assert xend.names() == ["Domain-0"]
