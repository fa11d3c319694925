"""Save and restore on the sim, through a real xend + simhv (facts §10.3).

A saved domain is gone from the host and lives in its file; restored, its guest runs on
where it stopped: what was on its screen is there, its uptime goes on. A file that is
not a whole, good save image, or whose domain name is taken, creates nothing.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.home import XendHome
from tests.support.ports import free_port
from tests.support.processes import wait_for
from tests.support.xend import Xend, run_xm
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.transfer import savefile, xfr
from xend_actors.transfer.savefile import HEADER

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_xend_config() -> str:
    """Migrations out of the shared xend go over plain TCP: it has no TLS certificates."""
    return "(xend-relocation-tls no)\n"


PROMPT = b"# "


def start(xend: Xend, name: str, *devices: sxp.Value) -> sxp.Value:
    """Create and unpause a sim domain; its info."""
    return xend.start_sim(name, *devices)


def sh(xend: Xend, dom: str, command: str, expect: str) -> str:
    return xend.sh(dom, command, expect, PROMPT)


@pytest.fixture
def own_xend(fresh_xend: Callable[..., Xend]) -> Xend:
    """A xend of the test's own (most tests share the module's ``xend``)."""
    return fresh_xend()


def uptime(text: str) -> float:
    return float(re.search(r"up ([0-9.]+) seconds", text).group(1))  # type: ignore[union-attr]


def saved(xend: Xend, tmp_path: Path, name: str = "s1") -> Path:
    start(xend, name)
    sh(xend, name, "echo typed-before-the-save", "typed-before-the-save\r\n")
    image = tmp_path / f"{name}.save"
    assert xend.ok(xend.post(f"/xend/domain/{name}", op="save", file=str(image))) == "0"
    return image


def test_save_destroys_the_domain_and_restore_brings_its_guest_back(
        own_xend: Xend, tmp_path: Path) -> None:
    xend = own_xend  # of its own: its save session is the first, (id 1)
    start(xend, "s1")
    before = uptime(sh(xend, "s1", "uptime", "seconds"))
    sh(xend, "s1", "echo typed-before-the-save", "typed-before-the-save\r\n")
    old_id = str(sxp.child_value(xend.info("s1"), "id"))
    image = tmp_path / "s1.save"
    assert xend.ok(xend.post("/xend/domain/s1", op="save", file=str(image))) == "0"

    assert "s1" not in xend.names()
    assert image.stat().st_size > HEADER.size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    events = xend.events.lines()
    assert f"xend.domain.save (s1 {old_id} begin (save (id 1) (state begin) (domain {old_id}) " \
           f"(file {image})))" in events
    assert any(e.startswith(f"xend.domain.save (s1 {old_id} ok") for e in events)
    assert f"xend.domain.died (s1 {old_id})" in events
    assert xend.sessions() == []

    reply = xend.post("/xend/domain/", op="restore", file=str(image))
    info = xend.ok(reply, 201)
    assert reply.headers["location"].endswith("/xend/domain/s1")
    assert sxp.child_value(info, "name") == "s1"
    new_id = str(sxp.child_value(info, "id"))
    assert new_id != old_id
    assert sxp.child_value(info, "state") != "--p--"
    assert "s1" in xend.names()
    assert xend.sessions() == []
    assert f"xend.domain.create (s1 {new_id})" in xend.events.lines()  # never as Domain-N

    port = xend.console_port("s1")
    with XendClient(unix_path=xend.home.unix_path) as client:
        wait_for(lambda: b"Restored from a saved state" in client.xend_console_log(port).data,
                 what="the restored guest's screen")
        screen = client.xend_console_log(port).data
    assert b"typed-before-the-save" in screen
    assert "still-alive" in sh(xend, "s1", "echo still-alive", "still-alive\r\n")
    assert uptime(sh(xend, "s1", "uptime", "seconds")) >= before
    assert "Traceback" not in xend.home.logfile.read_text()


def test_a_corrupt_or_truncated_or_foreign_file_is_refused_and_creates_nothing(
        xend: Xend, tmp_path: Path) -> None:
    image = saved(xend, tmp_path)
    data = image.read_bytes()
    names = xend.names()
    bad_files = {
        "truncated": data[:-10],
        "corrupt": data[:-1] + bytes([data[-1] ^ 0xFF]),
        "foreign": b"LinuxGuestRecord" + data[16:],
    }
    for kind, content in bad_files.items():
        bad = tmp_path / f"{kind}.save"
        bad.write_bytes(content)
        message = xend.error(xend.post("/xend/domain/", op="restore", file=str(bad)), 400)
        assert {"truncated": "truncated", "corrupt": "checksum",
                "foreign": "not a xend-actors save file"}[kind] in message, message
    message = xend.error(xend.post("/xend/domain/", op="restore",
                                   file=str(tmp_path / "none.save")), 400)
    assert "cannot read" in message
    assert xend.names() == names
    assert xend.sessions() == []


def test_a_name_clash_is_refused(xend: Xend, tmp_path: Path) -> None:
    image = saved(xend, tmp_path)
    start(xend, "s1")  # a new domain of the same name
    message = xend.error(xend.post("/xend/domain/", op="restore", file=str(image)), 409)
    assert "vm name clash: s1" in message
    assert xend.names().count("s1") == 1


def test_a_save_to_a_bad_place_leaves_the_domain_running(xend: Xend, tmp_path: Path) -> None:
    start(xend, "s1")
    for target in ("relative.save", str(tmp_path / "no-dir" / "x.save"), str(tmp_path)):
        xend.error(xend.post("/xend/domain/s1", op="save", file=target), 400)
    assert sxp.child_value(xend.info("s1"), "state") in ("-b---", "r----")
    assert "ok-still" in sh(xend, "s1", "echo ok-still", "ok-still\r\n")
    xend.error(xend.post("/xend/domain/Domain-0", op="save", file=str(tmp_path / "d0")), 409)
    message = xend.error(xend.post("/xend/domain/s1", op="migrate",
                                   destination="127.0.0.1:1"), 502)
    assert "cannot connect to the relocation port 127.0.0.1:1" in message
    assert xend.error(xend.post("/xend/domain/s1", op="migrate", destination="h:x"), 400)
    assert "ok-again" in sh(xend, "s1", "echo ok-again", "ok-again\r\n")


def test_xm_save_and_restore(xend: Xend, tmp_path: Path) -> None:
    start(xend, "x1")
    server = xend.home

    def xm(*args: str) -> subprocess.CompletedProcess[str]:
        return run_xm(server, *args, cwd=tmp_path)

    done = xm("save", "x1", "x1.save")  # relative to xm's directory
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x1.save").is_file()
    size = (tmp_path / "x1.save").stat().st_size
    wait_for(lambda: any(e.startswith("xend.domain.save.progress (x1 ")
                         and f"(phase save) (sent {size}) (total {size})" in e
                         for e in xend.events.lines()), what="the save's progress event")
    assert "x1" not in xend.names()
    done = xm("restore", "x1.save")
    assert done.returncode == 0, done.stderr
    assert "(name x1)" in done.stdout
    wait_for(lambda: any(e.startswith("xend.domain.restore.progress (x1 ")
                         and "(phase restore)" in e for e in xend.events.lines()),
             what="the restore's progress event")
    assert "x1" in xend.names()
    done = xm("restore", "x1.save")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and "name clash" in done.stderr


def test_a_save_that_fails_after_the_suspend_resumes_the_domain(xend: Xend) -> None:
    start(xend, "s1")
    sh(xend, "s1", "echo before", "before\r\n")
    # /proc is a directory no file can be made in: the write fails once the guest suspended.
    message = xend.error(xend.post("/xend/domain/s1", op="save", file="/proc/s1.save"), 500)
    assert message.startswith("save failed: cannot write /proc/s1.save"), message
    assert not Path("/proc/s1.save").exists()
    assert "s1" in xend.names()
    assert "after" in sh(xend, "s1", "echo after", "after\r\n")
    assert any(e.startswith("xend.domain.save (s1 ") and " error (save " in e
               for e in xend.events.lines())
    assert xend.sessions() == []


def test_a_restored_domain_gets_its_disk_back(xend: Xend, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    vbd = ["vbd", ["uname", f"file:{disk}"], ["dev", "sda1"], ["mode", "w"]]
    start(xend, "d1", vbd)
    assert "wrote 5" in sh(xend, "d1", "disk 0x801 write 0 hello", "wrote")
    image = tmp_path / "d1.save"
    xend.ok(xend.post("/xend/domain/d1", op="save", file=str(image)))
    info = xend.ok(xend.post("/xend/domain/", op="restore", file=str(image)), 201)
    [vbd_info] = sxp.children(sxp.child(info, "devices"), "vbd")
    assert sxp.child_value(vbd_info, "uname") == f"file:{disk}"
    assert "read 0 5\r\nhello\r\n" in sh(xend, "d1", "disk 0x801 read 0 5", "read 0 5\r\nhello")
    [vbd_now] = sxp.children(sxp.child(xend.info("d1"), "devices"), "vbd")
    assert sxp.child_value(vbd_now, "uname") == f"file:{disk}"


def test_a_save_interrupted_by_a_xend_restart_lets_the_domain_run_on_and_leaves_no_file(
        own_xend: Xend, tmp_path: Path) -> None:
    xend = own_xend
    start(xend, "s1")
    domid = str(sxp.child_value(xend.info("s1"), "id"))
    xend.ok(xend.post("/xend/domain/s1", op="shutdown", reason="suspend"), 202)
    wait_for(lambda: sxp.child_value(xend.info("s1"), "state") == "---s-", what="suspended")
    assert xend.home.xend("stop").returncode == 0
    # As a xend killed while the image was written leaves them: the session and the
    # image's half-written temp file (beside a file of the user's it must not touch).
    half = tmp_path / ".tmp-x.save.0123456789ab"
    half.write_bytes(b"half an image")
    theirs = tmp_path / ".tmp-x.save.mine"
    theirs.write_bytes(b"not xend's")
    session = xend.home.dbroot / "migrate" / "4"
    session.write_text(f"(save (id 4) (state begin) (domain {domid}) "
                       f"(file {tmp_path}/x.save) (partial {half}))\n")
    xend.start()
    assert not session.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name]
    assert "runs-again" in sh(xend, "s1", "echo runs-again", "runs-again\r\n")


def test_a_stuck_migration_holds_up_no_save_of_another_domain(xend: Xend,
                                                             tmp_path: Path) -> None:
    start(xend, "stuck")
    start(xend, "other")
    replies: list[httpx.Response] = []

    def migrate(port: int) -> None:
        with xend.home.unix_http() as http:
            http.timeout = httpx.Timeout(120)
            replies.append(http.post("/xend/domain/stuck",
                                     data={"op": "migrate", "destination": f"127.0.0.1:{port}"}))

    # A destination that takes the connection and never says a word.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(30)
        mover = threading.Thread(target=migrate, args=(silent.getsockname()[1],))
        mover.start()
        peer, _ = silent.accept()
        with peer:
            image = tmp_path / "other.save"
            assert xend.ok(xend.post("/xend/domain/other", op="save", file=str(image))) == "0"
            assert "other" not in xend.names()
            assert mover.is_alive(), "the migration ended before the other domain's save did"
            message = xend.error(xend.post("/xend/domain/stuck", op="save",
                                           file=str(tmp_path / "stuck.save")), 409)
            assert message == "domain stuck is already being migrated"
            assert not (tmp_path / "stuck.save").exists()
    mover.join(60)
    assert not mover.is_alive()
    [reply] = replies
    assert reply.status_code >= 400 and "migrate failed" in reply.text, reply.text
    assert "stuck" in xend.names()
    assert "runs-on" in sh(xend, "stuck", "echo runs-on", "runs-on\r\n")
    info = xend.ok(xend.post("/xend/domain/", op="restore", file=str(image)), 201)
    assert sxp.child_value(info, "name") == "other"
    assert xend.sessions() == []


def test_a_name_being_migrated_in_is_not_restored_meanwhile(
        xend_home: Callable[..., XendHome], tmp_path: Path) -> None:
    port = free_port()
    home = xend_home("(xend-relocation-server yes)\n(xend-relocation-address 127.0.0.1)\n"
                     f"(xend-relocation-port {port})\n(xend-relocation-tls no)\n")
    home.start()
    xend = Xend(home)
    image = saved(xend, tmp_path, "twin")
    info = savefile.read(image).info
    # A source that offers a domain of the same name, then goes quiet before its pages.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        source = xfr.Channel(sock, "the test's source", 30)
        source.send(xfr.Hello(*xfr.VERSION))
        assert source.receive() == xfr.OK
        source.send(xfr.Xfr(domid=99, info=info, memory_bytes=32 << 20, live=False))
        assert source.receive() == xfr.OK
        message = xend.error(xend.post("/xend/domain/", op="restore", file=str(image)), 409)
        assert message == "domain twin is already being migrated in"
        assert "twin" not in xend.names()
    # The source went away: the destination keeps nothing and the name is free again.
    wait_for(lambda: xend.sessions() == [], what="the migration in to be given up")
    info = xend.ok(xend.post("/xend/domain/", op="restore", file=str(image)), 201)
    assert sxp.child_value(info, "name") == "twin"
    assert xend.names().count("twin") == 1
    xend.http.close()
