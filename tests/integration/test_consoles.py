"""Domain consoles on the simulated hypervisor, against a real xend + simhv: the raw TCP
ports of ``(console-tcp yes)`` (the tests' homes say so), the WebSocket of the API (the
default: no TCP port at all), over the Unix socket, TCP and TLS; HTTP; xm."""

from __future__ import annotations

import contextlib
import errno
import os
import pty
import select
import socket
import ssl
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from tests.support.sharing import Reaper, SharedXend
from tests.support.terminal import (
    Terminal,
    WsRefused,
    WsTerminal,
    terminal,
    unix_socket,
    ws_terminal,
)
from tests.support.xend import XM, Xend
from xend_actors import sxp
from xend_actors.hypervisor.sim.guest import FLOOD_LINE

pytestmark = pytest.mark.integration

KERNEL = "/boot/vmlinuz-sim"
BANNER = b"Booting simulated Linux on xend-simhv"
PROMPT = b"# "
REMOTE_BANNER = b"************ REMOTE CONSOLE: CTRL-] TO QUIT ********"


def vm(name: str, *extra: sxp.Value) -> str:
    return sxp.show(["vm", ["name", name], ["memory", "32"],
                     ["image", ["linux", ["kernel", KERNEL]]], *extra])


def create(xend: Xend, name: str, *extra: sxp.Value, start: bool = True) -> int:
    """Create domain ``name`` (unpaused unless ``start`` is false); its console port."""
    info = xend.create(vm(name, *extra), unpause=start)
    return int(sxp.child_value(sxp.child(info, "console"), "console_port"))


def status(xend: Xend, port: int) -> str:
    return sxp.child_value(xend.get_sxp(f"/xend/console/{port}"), "status")


@pytest.fixture
def own_xend(fresh_xend: Callable[..., Xend]) -> Xend:
    """A xend of the test's own (most tests share the module's ``xend``)."""
    return fresh_xend()


def echo_round_trip(term: Terminal | WsTerminal, word: str) -> None:
    term.type(f"echo {word}")
    term.read_until(f"echo {word}\r\n{word}\r\n".encode(), PROMPT)


def flood_round_trip(term: Terminal | WsTerminal, size: int) -> None:
    """The guest's ``flood size`` arrives whole: nothing lost, doubled or out of order."""
    term.type(f"flood {size}")
    assert term.read_until(b"\r\n", timeout=30) == f"flood {size}\r\n".encode()
    text = FLOOD_LINE * (size // len(FLOOD_LINE) + 1)
    ending = b"\r\n" if size % len(FLOOD_LINE) else b""  # a flood ends its last line
    assert term.read_until(PROMPT, timeout=60) == text[:size] + ending + PROMPT


# --- the console port -----------------------------------------------------------------------


def test_the_console_relays_the_guest_both_ways(xend: Xend) -> None:
    port = create(xend, "c1")
    domid = sxp.child_value(xend.info("c1"), "id")
    assert port == xend.home.console_port_base + int(domid)
    with terminal(port) as term:
        term.read_until(BANNER, PROMPT)
        echo_round_trip(term, "hello")
        info = xend.get_sxp(f"/xend/console/{port}")
        assert sxp.child_value(info, "status") == "connected"
        host, client_port = sxp.child(info, "connected")[1:]
        assert (host, int(client_port)) == term.sock.getsockname()
    wait_for(lambda: status(xend, port) == "listening", what="the console to listen again")


def test_the_domain_info_carries_the_console_after_start_time(xend: Xend) -> None:
    port = create(xend, "c2")
    info = xend.info("c2")
    names = [item[0] for item in info[1:] if isinstance(item, list)]
    assert names.index("console") == names.index("start_time") + 1
    domid = sxp.child_value(info, "id")
    assert sxp.child(info, "console") == [
        "console", ["status", "listening"], ["id", str(port)], ["domain", domid],
        ["local_port", str(port)], ["remote_port", "1"], ["console_port", str(port)]]
    detail = xend.http.get("/xend/domain/", params={"detail": 1})
    by_name = {sxp.child_value(i, "name"): i for i in sxp.parse(detail.text)}
    assert sxp.child_value(sxp.child(by_name["c2"], "console"), "console_port") == str(port)
    assert sxp.child(by_name["Domain-0"], "console") is None
    assert xend.consoles() == [str(port)]
    xend.events.wait_line(f"xend.console.create ({port} {domid} {port})")


def test_a_config_console_port_is_used(xend: Xend) -> None:
    wanted = xend.home.console_port_base + 20
    assert create(xend, "c3", ["console", str(wanted)]) == wanted
    with terminal(wanted) as term:
        term.read_until(BANNER, PROMPT)


def test_a_second_client_is_refused_with_the_original_line(xend: Xend) -> None:
    port = create(xend, "c4")
    domid = sxp.child_value(xend.info("c4"), "id")
    with terminal(port) as first:
        first.read_until(PROMPT)
        with terminal(port) as second:
            assert second.read_until(b"\n") == (
                f"Cannot connect to console {port} on domain {domid}\n".encode())
            assert second.closed()
        echo_round_trip(first, "still-mine")


def test_the_next_client_gets_what_the_guest_said_while_nobody_was_there(xend: Xend) -> None:
    port = create(xend, "c5")
    with terminal(port) as first:
        first.read_until(PROMPT)
    wait_for(lambda: status(xend, port) == "listening", what="the first client gone")
    # An unknown sysrq key makes the guest print its help, with nobody connected.
    reply = xend.op("c5", "shutdown", reason="sysrq", key="x")
    assert reply.status_code == 202
    wait_for(lambda: b"SysRq : HELP" in xend.http.get(f"/xend/console/{port}/log").content,
             what="the guest's sysrq help in the scrollback")
    with terminal(port) as second:
        assert not second.read_until(b"SysRq : HELP").startswith(BANNER)  # not seen twice
        echo_round_trip(second, "back")


def test_the_disconnect_op_drops_the_client(xend: Xend) -> None:
    port = create(xend, "c6")
    with terminal(port) as term:
        term.read_until(PROMPT)
        client_port = term.sock.getsockname()[1]
        reply = xend.post(f"/xend/console/{port}", op="disconnect")
        assert reply.status_code == 200
        assert sxp.parse(reply.text) == "0"
        assert term.closed()
    assert status(xend, port) == "listening"
    xend.events.wait_line(f"xend.console.connect ({port} 127.0.0.1 {client_port})")
    xend.events.wait_line(f"xend.console.disconnect ({port} 127.0.0.1 {client_port})")
    with terminal(port) as again:
        echo_round_trip(again, "again")


def test_unknown_consoles_are_404(xend: Xend) -> None:
    assert xend.http.get("/xend/console/1").status_code == 404
    assert xend.post("/xend/console/1", op="disconnect").status_code == 404
    assert xend.http.get("/xend/console/1/log").status_code == 404


# --- restart, death, port conflicts ---------------------------------------------------------


def test_an_open_connection_survives_a_reboot_and_sees_the_new_boot(xend: Xend) -> None:
    port = create(xend, "r1", ["restart", "onreboot"])
    domid = sxp.child_value(xend.info("r1"), "id")
    with terminal(port) as term:
        term.read_until(BANNER, PROMPT)
        term.type("reboot")
        term.read_until(b"going down for reboot", BANNER, PROMPT, timeout=20)
        echo_round_trip(term, "reborn")
        xend.events.wait_line(f"xend.domain.restart (r1 {domid} success)")
        assert status(xend, port) == "connected"
    assert not xend.events.has(f"xend.console.close {port}")


def test_scrollback_outlives_a_crashed_domain_and_the_port_is_freed(xend: Xend) -> None:
    port = create(xend, "x1", ["restart", "never"])
    with terminal(port) as term:
        term.read_until(PROMPT)
        term.type("crash")
        term.read_until(b"Kernel panic")
        assert term.closed()  # dropped when the domain is gone
    wait_for(lambda: "x1" not in xend.names(), what="the crashed domain gone")
    xend.events.wait_line(f"xend.console.close {port}")
    assert xend.consoles() == []
    assert status(xend, port) == "closed"
    reply = xend.http.get(f"/xend/console/{port}/log")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["x-console-status"] == "closed"
    assert reply.content.startswith(BANNER)
    assert b"Kernel panic - not syncing" in reply.content
    assert int(reply.headers["x-console-first"]) == 0
    assert int(reply.headers["x-console-next"]) == len(reply.content)
    tail = xend.http.get(f"/xend/console/{port}/log", params={"since": 10, "wait": 30})
    assert tail.content == reply.content[10:]  # a closed console does not keep a poll waiting
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port is free


def test_a_console_port_in_use_refuses_the_create_and_leaves_nothing(xend: Xend) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        reply = xend.http.post("/xend/domain/", data={
            "op": "create", "config": vm("busy", ["console", str(port)])})
        assert reply.status_code == 409
        assert sxp.parse(reply.text) == [
            "xend.err", f"Error creating domain: console port in use: {port}"]
    assert xend.names() == ["Domain-0"]
    assert sorted(p.name for p in (xend.home.dbroot / "domain").iterdir()) == ["0"]
    assert xend.consoles() == []
    port = create(xend, "busy")  # the name and the domain id are free again
    with terminal(port) as term:
        term.read_until(PROMPT)


@pytest.mark.parametrize("how", ["kill -9", "stop"])
def test_consoles_come_back_on_the_same_ports_after_xend_restarts(own_xend: Xend,
                                                                 how: str) -> None:
    xend = own_xend
    ports = {name: create(xend, name, ["console", str(xend.home.console_port_base + 10 + i)])
             for i, name in enumerate(("k1", "k2"))}
    with terminal(ports["k1"]) as term:
        term.read_until(PROMPT)
        if how == "stop":
            assert xend.home.xend("stop").returncode == 0
        else:
            xend.home.kill9()
            assert xend.home.xend("status").returncode == 3
        assert term.closed()
    xend.start()
    assert xend.consoles() == sorted(str(p) for p in ports.values())
    for name, port in ports.items():
        info = sxp.child(xend.info(name), "console")
        assert sxp.child_value(info, "console_port") == str(port)
        with terminal(port) as term:
            echo_round_trip(term, f"{name}-back")


def squat(port: int) -> socket.socket | None:
    """A listener on ``port`` (someone else taking it), or None while it is not free."""
    try:
        return socket.create_server(("127.0.0.1", port))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        return None


def test_a_recovered_console_whose_port_is_busy_serves_the_api_and_listens_once_free(
        own_xend: Xend) -> None:
    """xend killed, its console's port taken meanwhile: the domain keeps its console (its
    scrollback, the API's clients) rather than losing it, and the console listens on its
    port as soon as the port is free again."""
    xend = own_xend
    port = create(xend, "squat", ["console", str(xend.home.console_port_base + 20)])
    wait_for(lambda: BANNER in xend.http.get(f"/xend/console/{port}/log").content,
             what="the guest's banner")
    xend.home.kill9()
    squatter = wait_for(lambda: squat(port), what=f"port {port} to be free to take")
    assert isinstance(squatter, socket.socket)
    with squatter:
        xend.start()
        pid = xend.home.pid()
        assert pid is not None
        assert xend.consoles() == [str(port)]
        assert status(xend, port) == "listening"
        assert BANNER in xend.http.get(f"/xend/console/{port}/log").content
        assert port not in listening_tcp_ports(pid)  # the squatter has it
    # Free again: the console takes its port within a few retries.
    wait_for(lambda: port in listening_tcp_ports(pid), timeout=20,
             what="the console listening on its port again")
    with terminal(port) as term:
        echo_round_trip(term, "after-squat")


# --- scrollback for viewers -------------------------------------------------------------------


def test_a_viewer_long_polls_the_log_beside_the_client(xend: Xend) -> None:
    port = create(xend, "v1")
    with terminal(port) as term:
        term.read_until(PROMPT)
        end = int(xend.http.get(f"/xend/console/{port}/log").headers["x-console-next"])
        replies: list[httpx.Response] = []

        def follow() -> None:
            with xend.home.http() as http:
                replies.append(http.get(f"/xend/console/{port}/log",
                                        params={"since": end, "wait": 30}))

        viewer = threading.Thread(target=follow)
        began = time.monotonic()
        viewer.start()
        time.sleep(0.2)  # let the poll start waiting; it must not answer before the output
        assert viewer.is_alive()
        echo_round_trip(term, "watched")
        viewer.join(timeout=30)
        assert time.monotonic() - began < 10
    (reply,) = replies
    assert reply.content.startswith(b"e")  # the guest's echo of what was typed
    assert int(reply.headers["x-console-first"]) == end
    assert int(reply.headers["x-console-next"]) == end + len(reply.content)
    bad = xend.http.get(f"/xend/console/{port}/log", params={"since": "-1"})
    assert bad.status_code == 400


# --- xm -----------------------------------------------------------------------------------------


def xm_env(home: XendHome) -> dict[str, str]:
    return {**os.environ, "XEND": f"127.0.0.1:{home.http_port}",
            "XEND_TOKEN": home.admin_token()}


def test_xm_consoles_lists_ports_and_the_connected_client(xend: Xend) -> None:
    assert XM, "the xm script is not installed beside this Python (pip install -e .)"
    port = create(xend, "m1")
    domid = sxp.child_value(xend.info("m1"), "id")
    with terminal(port) as term:
        term.read_until(PROMPT)
        done = subprocess.run([XM, "consoles"], capture_output=True, text=True, timeout=60,
                              env=xm_env(xend.home), stdin=subprocess.DEVNULL)
        client = f"127.0.0.1:{term.sock.getsockname()[1]}"
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Dom Port  Id Connection",
                                        f"{domid:>3} {port:>4} {port:>3} {client}"]
    listed = subprocess.run([XM, "list", "m1"], capture_output=True, text=True, timeout=60,
                            env=xm_env(xend.home), stdin=subprocess.DEVNULL)
    assert listed.stdout.splitlines()[1].endswith(str(port))


class Pty:
    """An xm process on a pseudo-terminal, read with deadlines."""

    def __init__(self, *args: str, home: XendHome, env: dict[str, str] | None = None) -> None:
        assert XM, "the xm script is not installed beside this Python (pip install -e .)"
        self.master, self.slave = pty.openpty()
        self.mode = termios.tcgetattr(self.slave)
        environ = xm_env(home) if env is None else {
            **{k: v for k, v in os.environ.items() if k not in ("XEND", "XEND_TOKEN")}, **env}
        self.process = subprocess.Popen([XM, *args], stdin=self.slave, stdout=self.slave,
                                        stderr=self.slave, env=environ, close_fds=True)
        self.seen = b""

    def read_until(self, marker: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} within {timeout:g} s in {self.seen!r}")
            if select.select([self.master], [], [], left)[0]:
                self.seen += os.read(self.master, 65536)
        at = self.seen.index(marker) + len(marker)
        got, self.seen = self.seen[:at], self.seen[at:]
        return got

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self.master)
        os.close(self.slave)


@contextlib.contextmanager
def xm_on_pty(*args: str, home: XendHome, env: dict[str, str] | None = None) -> Iterator[Pty]:
    """xm on a pty, reaching ``home``'s xend over TCP with a token, or as ``env`` says."""
    term = Pty(*args, home=home, env=env)
    try:
        yield term
    finally:
        term.close()


def test_xm_console_is_a_raw_terminal_that_ctrl_close_bracket_quits(xend: Xend) -> None:
    create(xend, "t1")
    with xm_on_pty("console", "t1", home=xend.home) as term:
        term.read_until(REMOTE_BANNER)
        term.read_until(BANNER)
        term.read_until(PROMPT)
        assert termios.tcgetattr(term.slave) != term.mode  # raw while it runs
        term.write(b"echo typed\r")
        term.read_until(b"typed\r\n# ")
        term.write(b"\x1d")
        assert term.process.wait(timeout=10) == 0
        assert termios.tcgetattr(term.slave) == term.mode


def test_xm_create_c_connects_to_the_new_console(xend: Xend, tmp_path: Path) -> None:
    config = tmp_path / "auto.sxp"
    config.write_text(vm("auto1"))
    with xm_on_pty("create", "-c", "-F", str(config), home=xend.home) as term:
        term.read_until(b"Started domain auto1, console on port")
        term.read_until(REMOTE_BANNER)
        term.read_until(PROMPT)
        term.write(b"\x1d")
        assert term.process.wait(timeout=10) == 0


# --- the console through the API: a WebSocket (the default, console-tcp no) -----------------

API_ONLY = "(console-tcp no)\n"  # the default; said, since the tests' homes say yes


@pytest.fixture(scope="module")
def api_shared(reaper: Reaper) -> Iterator[SharedXend]:
    shared = SharedXend(reaper, API_ONLY)
    yield shared
    shared.close()


@pytest.fixture
def api_xend(api_shared: SharedXend) -> Iterator[Xend]:
    """A xend of the module whose consoles have no TCP port (the shipped default)."""
    yield api_shared.take()
    api_shared.give_back()


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports the process ``pid`` listens on (from /proc: its sockets' inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def tcp_ws(home: XendHome, port: int, token: str | None = None,
           **headers: str) -> WsTerminal:
    """A WebSocket terminal on console ``port`` over xend's TCP port, with an admin token
    unless another is given."""
    sock = socket.create_connection(("127.0.0.1", home.http_port), timeout=10)
    auth = {"Authorization": f"Bearer {token or home.admin_token()}"}
    return WsTerminal(sock, port, {**auth, **headers}, host=f"127.0.0.1:{home.http_port}")


def attach_refusal(home: XendHome, port: int, token: str | None = None,
                   **headers: str) -> tuple[int, str]:
    """The status and message of an attach that xend refuses before the upgrade."""
    with pytest.raises(WsRefused) as refused:
        tcp_ws(home, port, token, **headers).close()
    value = sxp.parse(refused.value.body)
    assert sxp.name(value) == "xend.err", refused.value.body
    return refused.value.status, str(value[1])


def xend_threads(home: XendHome) -> int:
    pid = home.pid()
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:")[1].split()[0])


def test_by_default_no_tcp_port_listens_for_a_console(api_xend: Xend) -> None:
    pid = api_xend.home.pid()
    assert pid is not None
    before = listening_tcp_ports(pid)
    port = create(api_xend, "a1")
    with ws_terminal(api_xend.home.unix_path, port) as term:
        term.read_until(BANNER, PROMPT)  # the console works...
        assert listening_tcp_ports(pid) == before  # ...and xend listens on nothing new
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    # Waiting for its next client, through the API.
    wait_for(lambda: status(api_xend, port) == "listening", what="the console listening")


def test_a_websocket_attach_types_on_the_guest_and_reads_its_replies(api_xend: Xend) -> None:
    port = create(api_xend, "a2")
    with ws_terminal(api_xend.home.unix_path, port) as term:
        term.read_until(BANNER, PROMPT)  # what the guest said before anyone was there
        echo_round_trip(term, "hello")
        flood_round_trip(term, 4 << 20)  # many times every buffer on the way
        info = api_xend.get_sxp(f"/xend/console/{port}")
        assert sxp.child_value(info, "status") == "connected"
        assert sxp.child(info, "connected") == ["connected", "<local>", "0"]  # Unix socket
    api_xend.events.wait_line(f"xend.console.connect ({port} '<local>' 0)")
    api_xend.events.wait_line(f"xend.console.disconnect ({port} '<local>' 0)")
    wait_for(lambda: status(api_xend, port) == "listening", what="the console free again")
    with ws_terminal(api_xend.home.unix_path, port) as again:
        echo_round_trip(again, "again")


def test_a_second_attach_is_refused_while_the_first_is_on(api_xend: Xend) -> None:
    port = create(api_xend, "a3")
    domid = api_xend.domid("a3")
    with ws_terminal(api_xend.home.unix_path, port) as first:
        first.read_until(PROMPT)
        with ws_terminal(api_xend.home.unix_path, port) as second:
            assert second.read_until(b"\n") == (
                f"Cannot connect to console {port} on domain {domid}\n".encode())
            assert second.closed()
            assert second.close_code == 1000
        echo_round_trip(first, "still-mine")


def test_the_disconnect_op_and_the_domain_s_death_close_the_websocket(api_xend: Xend) -> None:
    port = create(api_xend, "a4", ["restart", "never"])
    with ws_terminal(api_xend.home.unix_path, port) as term:
        term.read_until(PROMPT)
        assert api_xend.post(f"/xend/console/{port}", op="disconnect").status_code == 200
        assert term.closed()
    with ws_terminal(api_xend.home.unix_path, port) as term:
        term.type("crash")
        term.read_until(b"Kernel panic")
        assert term.closed()  # dropped when the domain is gone
    wait_for(lambda: status(api_xend, port) == "closed", what="the console closed")
    with pytest.raises(WsRefused) as refused:  # no upgrade for a console that is no more
        ws_terminal(api_xend.home.unix_path, port).__enter__()
    assert refused.value.status == 409
    assert b"is closed: its domain is gone" in refused.value.body


def test_an_attach_without_the_upgrade_is_a_clear_400(api_xend: Xend) -> None:
    port = create(api_xend, "a5")
    message = Xend.error(api_xend.get(f"/xend/console/{port}/attach"), 400)
    assert "the request needs the upgrade headers" in message
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    for headers, says in [
        ({**upgrade, "Sec-WebSocket-Key": "too-short"}, "Sec-WebSocket-Key"),
        ({**upgrade, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
          "Sec-WebSocket-Version": "8"}, "version 13 only"),
    ]:
        assert says in Xend.error(api_xend.http.get(f"/xend/console/{port}/attach",
                                                    headers=headers), 400)
    assert status(api_xend, port) == "listening"  # none of them became a client
    with pytest.raises(WsRefused) as unknown:
        ws_terminal(api_xend.home.unix_path, 1).__enter__()
    assert unknown.value.status == 404


def test_a_websocket_from_another_site_is_refused(api_xend: Xend) -> None:
    port = create(api_xend, "a6")
    home = api_xend.home
    own = f"http://127.0.0.1:{home.http_port}"
    for headers in [{"Origin": "http://evil.example"},
                    {"Origin": f"http://127.0.0.1:{home.http_port + 1}"},  # another port
                    {"Origin": own, "Sec-Fetch-Site": "cross-site"}]:
        code, message = attach_refusal(home, port, **headers)
        assert (code, message.split(":")[0]) == (403, "refused"), headers
    assert status(api_xend, port) == "listening"
    term = tcp_ws(home, port, Origin=own)  # xend's own pages may
    try:
        echo_round_trip(term, "same-origin")
    finally:
        term.close()


def test_deleting_the_token_drops_the_console_it_holds(api_xend: Xend) -> None:
    port = create(api_xend, "a12")
    holder = api_xend.home.new_token("holder")
    term = tcp_ws(api_xend.home, port, holder)
    try:
        term.read_until(BANNER, PROMPT)
        echo_round_trip(term, "before")
        with api_xend.home.unix_http() as http:
            assert http.post("/xend/token/holder", data={"op": "delete"}).status_code == 200
        assert term.closed(), "the console stayed open after its token was deleted"
    finally:
        term.close()
    wait_for(lambda: status(api_xend, port) == "listening", what="the client dropped")
    other = tcp_ws(api_xend.home, port)  # the console itself lives on, for others
    try:
        echo_round_trip(other, "after")
    finally:
        other.close()


def test_a_viewer_may_read_the_scrollback_but_not_attach(api_xend: Xend) -> None:
    port = create(api_xend, "a7")
    viewer = api_xend.home.new_token("eyes", "viewer")
    code, message = attach_refusal(api_xend.home, port, viewer)
    assert (code, message) == (403, f"token eyes is a viewer: it may not GET "
                                    f"/xend/console/{port}/attach")
    assert status(api_xend, port) == "listening"
    with api_xend.home.http(token=viewer) as http:
        wait_for(lambda: BANNER in http.get(f"/xend/console/{port}/log").content,
                 what="the boot in the scrollback, read by the viewer")


def test_closing_either_end_leaves_no_thread_behind(api_xend: Xend) -> None:
    port = create(api_xend, "a8")
    with ws_terminal(api_xend.home.unix_path, port) as term:
        term.read_until(PROMPT)
    wait_for(lambda: status(api_xend, port) == "listening", what="the first client gone")

    def clients_go_and_are_dropped(times: int) -> None:
        for _ in range(times):  # the client goes: a close frame, or just the socket closed
            with ws_terminal(api_xend.home.unix_path, port) as term:
                echo_round_trip(term, "once")
            term = WsTerminal(unix_socket(api_xend.home.unix_path), port)
            echo_round_trip(term, "abrupt")
            term.sock.close()
            wait_for(lambda: status(api_xend, port) == "listening", what="the client gone")
        for _ in range(times):  # xend ends it
            with ws_terminal(api_xend.home.unix_path, port) as term:
                echo_round_trip(term, "dropped")
                assert api_xend.post(f"/xend/console/{port}",
                                     op="disconnect").status_code == 200
                assert term.closed()

    clients_go_and_are_dropped(1)
    baseline = xend_threads(api_xend.home)
    clients_go_and_are_dropped(5)
    # The HTTP pool keeps the threads it grew to, and a disconnect that comes while the
    # live client's worker is still busy takes a second one; a console keeps none, so
    # ten clients leave no more than that one.
    most = baseline + 1
    wait_for(lambda: xend_threads(api_xend.home) <= most, what="xend's threads back to "
             f"{most} (now {xend_threads(api_xend.home)})")


def test_xm_console_uses_the_websocket_over_the_unix_socket(api_xend: Xend) -> None:
    create(api_xend, "a9")
    domid = api_xend.domid("a9")
    port = api_xend.console_port("a9")
    unix = {"XEND_UNIX_PATH": str(api_xend.home.unix_path)}  # as root, xm's default way
    with xm_on_pty("console", "a9", home=api_xend.home, env=unix) as term:
        term.read_until(REMOTE_BANNER)
        term.read_until(BANNER)
        term.read_until(PROMPT)
        assert termios.tcgetattr(term.slave) != term.mode  # raw while it runs
        term.write(b"echo typed\r")
        term.read_until(b"typed\r\n# ")
        with xm_on_pty("console", "a9", home=api_xend.home, env=unix) as second:
            second.read_until(f"Cannot connect to console {port} on domain {domid}".encode())
            second.read_until(b"REMOTE CONSOLE EXITED")
            assert second.process.wait(timeout=10) == 0
        term.write(b"\x1d")
        assert term.process.wait(timeout=10) == 0
        assert termios.tcgetattr(term.slave) == term.mode


def test_xm_console_refused_says_why_in_one_line(api_xend: Xend) -> None:
    create(api_xend, "a10")
    viewer = api_xend.home.new_token("peek", "viewer")
    env = {**xm_env(api_xend.home), "XEND_TOKEN": viewer}
    assert XM, "the xm script is not installed beside this Python (pip install -e .)"
    done = subprocess.run([XM, "console", "a10"], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)
    port = api_xend.console_port("a10")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"Error: token peek is a viewer: it may not GET "
                           f"/xend/console/{port}/attach\n")


# --- (console-tcp yes): the raw ports as in the original, beside the API ----------------------


def test_with_console_tcp_the_raw_port_and_the_websocket_share_one_client(xend: Xend) -> None:
    port = create(xend, "t2")
    domid = xend.domid("t2")
    refusal = f"Cannot connect to console {port} on domain {domid}\n".encode()
    with ws_terminal(xend.home.unix_path, port) as ws:
        ws.read_until(PROMPT)
        with terminal(port) as raw:
            assert raw.read_until(b"\n") == refusal
            assert raw.closed()
        echo_round_trip(ws, "ws-first")
    wait_for(lambda: status(xend, port) == "listening", what="the WebSocket client gone")
    with terminal(port) as raw:
        echo_round_trip(raw, "raw-first")
        with ws_terminal(xend.home.unix_path, port) as ws:
            assert ws.read_until(b"\n") == refusal
            assert ws.closed()


# --- over TLS: the WebSocket through xend's TLS listener ---------------------------------------


@pytest.fixture(scope="module")
def tls_shared(reaper: Reaper) -> Iterator[SharedXend]:
    shared = SharedXend(reaper, "(xend-tls yes)\n" + API_ONLY)
    yield shared
    shared.close()


@pytest.fixture
def tls_xend(tls_shared: SharedXend) -> Iterator[Xend]:
    """A xend of the module whose TCP port speaks TLS (its self-signed certificate)."""
    yield tls_shared.take()
    tls_shared.give_back()


def tls_cert(home: XendHome) -> Path:
    return home.dbroot / "tls" / "cert.pem"


def tls_ws(home: XendHome, port: int) -> WsTerminal:
    """A WebSocket terminal on console ``port`` over xend's TLS port, the certificate
    verified, with an admin token."""
    context = ssl.create_default_context(cafile=str(tls_cert(home)))
    raw = socket.create_connection(("127.0.0.1", home.http_port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    return WsTerminal(sock, port, {"Authorization": f"Bearer {home.admin_token()}"},
                      host=f"127.0.0.1:{home.http_port}")


def test_over_tls_the_console_types_and_floods_through_the_websocket(tls_xend: Xend) -> None:
    port = create(tls_xend, "s1")
    term = tls_ws(tls_xend.home, port)
    try:
        term.read_until(BANNER, PROMPT)
        echo_round_trip(term, "secure")
        flood_round_trip(term, 4 << 20)
        echo_round_trip(term, "after")
    finally:
        term.close()
    wait_for(lambda: status(tls_xend, port) == "listening", what="the TLS client gone")


def test_xm_console_over_tls_verifies_xend_and_a_wrong_pin_gets_nothing(
        tls_xend: Xend) -> None:
    create(tls_xend, "s2")
    home = tls_xend.home
    over_tls = {"XEND": f"https://127.0.0.1:{home.http_port}",
                "XEND_TOKEN": home.admin_token(), "XEND_CA": str(tls_cert(home))}
    with xm_on_pty("console", "s2", home=home, env=over_tls) as term:
        term.read_until(REMOTE_BANNER)
        term.read_until(PROMPT)
        term.write(b"echo over-tls\r")
        term.read_until(b"over-tls\r\n# ")
        term.write(b"\x1d")
        assert term.process.wait(timeout=10) == 0
    assert XM, "the xm script is not installed beside this Python (pip install -e .)"
    wrong = {**over_tls, "XEND_CA": "", "XEND_FINGERPRINT": "AB" * 32}
    env = {k: v for k, v in os.environ.items() if k != "XEND"} | wrong
    done = subprocess.run([XM, "console", "s2"], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("Error: the certificate of xend at https://127.0.0.1:")
    assert done.stderr.count("\n") == 1
    assert not tls_xend.events.has(f"xend.console.connect ({tls_xend.console_port('s2')} "
                                   f"127.0.0.1 0)")


# --- scrollback across xend restarts (issue 15 item 6) -----------------------------------------

MIB = 1 << 20


def console_log(xend: Xend, port: int, since: int = 0) -> tuple[bytes, int, int]:
    """The console's log after ``since``: its bytes, first offset and next offset."""
    reply = xend.http.get(f"/xend/console/{port}/log", params={"since": since})
    assert reply.status_code == 200, reply.text
    return (reply.content, int(reply.headers["x-console-first"]),
            int(reply.headers["x-console-next"]))


def kept_file(xend: Xend, port: int) -> Path:
    return xend.home.run_dir / "state" / "console" / f"{port}.log"


def restart(xend: Xend, how: str) -> None:
    if how == "restart":
        assert xend.home.xend("restart").returncode == 0, xend.home.log_tail()
        xend.reconnect()
    else:
        xend.home.kill9()
        xend.start()


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_the_scrollback_survives_xend_restarts_and_a_follower_goes_on(own_xend: Xend,
                                                                     how: str) -> None:
    xend = own_xend
    port = create(xend, "s1")
    with terminal(port) as term:
        term.read_until(PROMPT)
        echo_round_trip(term, "before-restart")
    before, first, end = console_log(xend, port)
    assert before.startswith(BANNER) and b"before-restart" in before
    assert (first, end) == (0, len(before))
    restart(xend, how)
    assert console_log(xend, port) == (before, 0, end)  # the domain page shows it again
    with terminal(port) as term:
        echo_round_trip(term, "after-restart")
    # A follower at ``end`` before the restart gets exactly what came after it.
    tail, tail_first, tail_next = console_log(xend, port, since=end)
    assert tail_first == end and tail.startswith(b"echo after-restart")
    assert b"before-restart" not in tail
    assert console_log(xend, port) == (before + tail, 0, tail_next)


def test_the_kept_scrollback_is_private_bounded_and_the_last_mib(own_xend: Xend) -> None:
    xend = own_xend
    port = create(xend, "s2")
    with terminal(port) as term:
        term.read_until(PROMPT)
        flood_round_trip(term, 3 * MIB)
    before, first, end = console_log(xend, port)
    assert len(before) == MIB and first == end - MIB and end > 3 * MIB
    kept = kept_file(xend, port)
    assert kept.parent.stat().st_mode & 0o777 == 0o700
    assert kept.stat().st_mode & 0o777 == 0o600
    assert kept.stat().st_size <= MIB + 128 * 1024  # the ring, a header and some slack
    xend.home.kill9()
    xend.start()
    assert console_log(xend, port) == (before, first, end)
    assert kept.stat().st_size <= MIB + 128 * 1024


def test_the_kept_scrollback_goes_with_its_domain(own_xend: Xend) -> None:
    xend = own_xend
    port = create(xend, "s3")
    with terminal(port) as term:
        term.read_until(PROMPT)
        echo_round_trip(term, "soon-gone")
    assert b"soon-gone" in console_log(xend, port)[0]
    kept = kept_file(xend, port)
    assert kept.exists()
    xend.ok(xend.op("s3", "destroy", reason="halt"))
    wait_for(lambda: "s3" not in xend.names(), what="the destroyed domain gone")
    xend.events.wait_line(f"xend.console.close {port}")
    assert not kept.exists()
    assert b"soon-gone" in console_log(xend, port)[0]  # the closed console's, in memory
    restart(xend, "restart")
    assert xend.http.get(f"/xend/console/{port}/log").status_code == 404
    assert list(kept.parent.iterdir()) == []
