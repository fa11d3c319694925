"""The debug port as a user at a prompt sees it, on a real xend: root on the debug socket
(``<run-dir>/debug.sock``) for everything; nobody else there, even with the socket's
mode opened up; TCP (``xend-event-port``) only with ``(xend-debug-tcp yes)``, and then
only for the harmless requests."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from xend_actors import sxp

pytestmark = pytest.mark.integration

OPS = ["console.disconnect", "debug.controller", "debug.msg", "exit", "help", "info",
       "log.stderr", "pretty", "quit", "sys.inject", "sys.modules", "sys.subscribe", "trace"]
# What a TCP client may not ask, one request each; root may on the socket.
ROOT_ONLY = {"exit": "(exit)", "trace": "traceon", "log.stderr": "(log.stderr on)",
             "debug.msg": "(debug.msg on)", "debug.controller": "(debug_controller on)",
             "sys.inject": "(sys.inject (xend.test.tcp))",
             "console.disconnect": "(console.disconnect (id 9600))",
             "sys.modules": "(sys.modules)"}
TCP = "(xend-debug-tcp yes)"
VM = "(vm (name x) (memory 16) (image (linux (kernel /boot/vmlinuz-sim))))"


class DebugPort:
    """One connection to xend's debug port: lines out, SXP forms in, events kept aside."""

    def __init__(self, home: XendHome, tcp: bool = False) -> None:
        if tcp:
            self.sock = socket.create_connection(("127.0.0.1", home.event_port), timeout=10)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(home.debug_socket))
        self.parser = sxp.Parser()
        self.events: list[sxp.Value] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def form(self, timeout: float = 10.0) -> sxp.Value:
        """The next form xend sends; fails the test after ``timeout`` or on end of input."""
        deadline = time.monotonic() + timeout
        while not self.parser.ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing from the debug port within {timeout:g} s")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the debug port closed the connection")
            self.parser.input(data)
        return self.parser.get_val()

    def reply(self) -> sxp.Value:
        """The next reply; events that come first are kept in ``events``."""
        while sxp.name(form := self.form()) == "event":
            self.events.append(form)
        return form

    def request(self, line: str) -> sxp.Value:
        self.send(line + "\n")
        return self.reply()

    def event(self, name: str) -> sxp.Value:
        """The first event called ``name``, from those kept or from what comes next."""
        while True:
            for event in self.events:
                if event[1] == name:
                    self.events.remove(event)
                    return event
            form = self.form()
            assert sxp.name(form) == "event", f"a reply nobody asked for: {form}"
            self.events.append(form)

    def closed_by_xend(self, timeout: float = 10.0) -> bool:
        """True once xend closes the connection, having sent nothing more."""
        self.sock.settimeout(timeout)
        return self.sock.recv(1) == b""


    def hang_up(self) -> None:
        """Close this end and wait until xend closed its end too (it let the client go)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(10)
            while self.sock.recv(65536):
                pass
        self.close()


@contextlib.contextmanager
def connections(home: XendHome, tcp: bool = False) -> Iterator[Callable[[], DebugPort]]:
    """Connections to ``home``'s debug socket (or its TCP port), each subscribed before it
    is handed out."""
    ports: list[DebugPort] = []

    def connect() -> DebugPort:
        port = DebugPort(home, tcp)
        ports.append(port)
        # Replies come after the subscription to every event is made.
        assert sxp.name(port.request("(pretty)")) == "ok"
        return port

    try:
        yield connect
    finally:
        for port in ports:
            port.hang_up()


@pytest.fixture
def debug_port(shared_home: XendHome) -> Iterator[Callable[[], DebugPort]]:
    """Connections to the module's shared xend's debug port."""
    with connections(shared_home) as connect:
        yield connect


@pytest.fixture
def own_debug_port(running_xend: XendHome) -> Iterator[Callable[[], DebugPort]]:
    """Connections to the debug port of a xend of the test's own."""
    with connections(running_xend) as connect:
        yield connect


def err_value(reply: sxp.Value) -> str:
    assert sxp.name(reply) == "err", reply
    return sxp.child_value(reply, "value")


def create_domain(home: XendHome) -> str:
    with home.unix_http() as client:
        reply = client.post("/xend/domain/", data={"op": "create", "config": VM})
    assert reply.status_code == 201, reply.text
    return sxp.child_value(sxp.parse(reply.text), "id")


def test_help_lists_the_ops_as_a_plain_line_and_as_sxp(
    debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    assert port.request("help") == ["ok", OPS]
    assert port.request("(help)") == ["ok", OPS]


def test_a_domain_create_arrives_as_an_event(
    shared_home: XendHome, debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    domid = create_domain(shared_home)
    assert port.event("xend.domain.create") == ["event", "xend.domain.create", ["x", domid]]


def test_subscribe_replaces_the_subscription(
    shared_home: XendHome, debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    assert port.request("(sys.subscribe xend.domain.?)") == ["ok"]
    assert port.request("(sys.inject (xend.test.ping (a 1)))") == ["ok"]
    domid = create_domain(shared_home)
    # Events reach a client in the order they were published, so the ping would be first.
    assert port.form() == ["event", "xend.domain.create", ["x", domid]]
    assert port.events == []


def test_an_injected_event_comes_back(debug_port: Callable[[], DebugPort]) -> None:
    port = debug_port()
    assert port.request("(sys.inject (xend.test.ping (a 1)))") == ["ok"]
    assert port.event("xend.test.ping") == [
        "event", "xend.test.ping", ["xend.test.ping", ["a", "1"]]]
    assert sxp.name(port.request("(sys_inject nothing)")) == "err"


def test_every_request_in_one_send_gets_its_reply_in_order(
    debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    port.send("(help)\n(pretty off) info\n(frobnicate)\n(log_stderr off)\n")
    assert [port.reply() for _ in range(5)] == [
        ["ok", OPS],
        ["ok"],
        ["ok", ["info"]],
        ["err", ["type", "BadRequest"], ["value", "unknown op frobnicate; (help) lists the ops"]],
        ["ok"],
    ]


@pytest.mark.parametrize(("line", "error"), [
    (b")(", "bad SXP at column 1: syntax error: )"),
    (b"(help", "bad SXP at column 6: the line ends inside a form"),
    (b"\xff\xfe", "bad SXP at column 1: invalid UTF-8: byte 0xff"),
    (b"(" * 100 + b")" * 100, "bad SXP at column 33: nesting deeper than 32"),
    (b"()", "expected (OP ARG ...) or a plain command such as help"),
    (b"(trace maybe)", "expected (trace on) or (trace off)"),
    (b"(debug.msg)", "expected (debug.msg on) or (debug.msg off)"),
    (b"(exit now please", "bad SXP at column 17: the line ends inside a form"),
])
def test_bad_requests_get_an_error_and_the_connection_stays_usable(
    debug_port: Callable[[], DebugPort], line: bytes, error: str,
) -> None:
    port = debug_port()
    port.send(line + b"\n")
    assert err_value(port.reply()) == error
    assert port.request("help") == ["ok", OPS]


def test_an_oversized_line_gets_one_error_and_is_skipped(
    debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    port.send(b"(sys.inject (big " + b"x" * 100_000 + b"))\n")
    assert err_value(port.reply()) == "line longer than 65536 bytes"
    assert port.request("help") == ["ok", OPS]
    assert port.events == []


def test_quit_closes_the_connection_after_the_replies_before_it(
    debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    port.send("help\nquit\nhelp\n")
    assert port.reply() == ["ok", OPS]
    assert port.closed_by_xend()


def test_switches_answer_ok(debug_port: Callable[[], DebugPort]) -> None:
    port = debug_port()
    for line in ("(debug.msg on)", "(debug_controller on)", "(debug.msg off)",
                 "(debug.controller off)", "(log.stderr on)", "(log.stderr off)"):
        assert port.request(line) == ["ok"], line


def test_info_lists_the_consoles_and_console_disconnect_drops_a_client(
    shared_home: XendHome, debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    domid = create_domain(shared_home)
    info = port.request("info")
    assert sxp.name(info) == "ok" and sxp.name(info[1]) == "info"
    console = next(c for c in sxp.children(info[1], "console")
                   if sxp.child_value(c, "domain") == domid)
    console_port = sxp.child_value(console, "console_port")
    with socket.create_connection(("127.0.0.1", int(console_port)), timeout=10) as term:
        assert port.event("xend.console.connect")[2][0] == console_port
        assert port.request(f"(console.disconnect (id {console_port}))") == ["ok"]
        assert port.event("xend.console.disconnect")[2][0] == console_port
        while term.recv(4096):  # the banner, maybe; then the end
            pass


def test_console_disconnect_needs_the_id_of_a_console(
    debug_port: Callable[[], DebugPort],
) -> None:
    port = debug_port()
    assert err_value(port.request("(console.disconnect)")) == "Missing console id"
    assert err_value(port.request("(console.disconnect (id x))")).startswith("console id:")
    assert err_value(port.request("(console.disconnect (id 1))")) == "no console on port 1"


def test_trace_covers_web_threads_and_actors_until_traceoff(
    shared_home: XendHome, debug_port: Callable[[], DebugPort],
) -> None:
    trace_file = shared_home.logfile.parent / "xend.trace"
    port = debug_port()
    assert port.request("traceon") == ["ok"]
    with shared_home.unix_http() as client:
        assert client.get("/xend/domain/").status_code == 200
        assert client.get("/xend/domain/nosuch").status_code == 404
        assert client.get("/xend/node/").status_code == 200  # asks the Hypervisor actor
    assert port.request("traceoff") == ["ok"]
    lines = trace_file.read_text().splitlines()
    assert any("] xend_actors.web." in line for line in lines)
    assert any(line.split("] ")[1].startswith("xend_actors.hypervisor.actor:")
               and "[Hypervisor-" in line for line in lines)
    assert any("exception NotFound" in line for line in lines)
    size = trace_file.stat().st_size
    with shared_home.unix_http() as client:
        assert client.get("/xend/domain/").status_code == 200
    assert port.request("help") == ["ok", OPS]
    assert trace_file.stat().st_size == size


def test_exit_from_root_on_the_socket_stops_xend(
    running_xend: XendHome, own_debug_port: Callable[[], DebugPort],
) -> None:
    port = own_debug_port()
    assert port.request("(exit)") == ["ok"]
    assert port.closed_by_xend()
    wait_for(lambda: running_xend.xend("status").returncode == 3, timeout=60,
             what="xend to stop")


def test_a_client_too_many_is_told_and_closed(
    running_xend: XendHome, own_debug_port: Callable[[], DebugPort],
) -> None:
    for _ in range(16):
        own_debug_port()
    extra = DebugPort(running_xend)
    with contextlib.closing(extra):
        assert err_value(extra.form()) == "too many debug clients (at most 16)"
        assert extra.closed_by_xend()


# --- who may use the debug port --------------------------------------------------------


@pytest.fixture(scope="module")
def stranger() -> Iterator[str]:
    """A user of this host who is not root, made for the tests and removed after them."""
    name = f"xendtest-{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


# Run as the stranger: connect to the socket, ask for the worst, print what comes back.
ATTEMPT = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print(f"connect: {type(error).__name__}")
    sys.exit()
try:
    sock.sendall(b"(sys.inject (xend.test.stranger))\n(exit)\n")
except OSError as error:
    print(f"send: {type(error).__name__}")
seen = b""
try:
    while data := sock.recv(4096):
        seen += data
except ConnectionResetError:  # it sent before its refusal came
    pass
print(seen.decode().strip())
"""


def attempt_as(user: str, home: XendHome) -> str:
    """What the stranger ``user`` gets when asking ``home``'s debug socket to stop xend."""
    python = shutil.which("python3", path="/usr/bin:/bin")  # not root's own, out of reach
    assert python is not None
    done = subprocess.run(["runuser", "-u", user, "--", python, "-c", ATTEMPT,
                           str(home.debug_socket)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def nothing_done(home: XendHome, port: DebugPort) -> None:
    """xend still runs, and nothing the stranger asked for happened: the first test event
    on ``port`` (subscribed before the attempt) is the one root injects after it."""
    assert home.alive()
    assert port.request("(sys.inject (xend.test.after))") == ["ok"]
    first = port.form()
    while not str(first[1]).startswith("xend.test."):
        first = port.form()
    assert first[1] == "xend.test.after"


def started_line(home: XendHome) -> str:
    [line] = re.findall(r"Xend Daemon started on (.*)", home.logfile.read_text())
    return line


def test_by_default_only_roots_socket_listens(shared_home: XendHome) -> None:
    mode = shared_home.debug_socket.stat()
    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == os.geteuid() == 0
    assert f"unix://{shared_home.debug_socket}" in started_line(shared_home)
    assert "tcp://" not in started_line(shared_home)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", shared_home.event_port), timeout=10)


def test_a_user_who_is_not_root_cannot_reach_the_socket(
    shared_home: XendHome, debug_port: Callable[[], DebugPort], stranger: str,
) -> None:
    port = debug_port()
    assert attempt_as(stranger, shared_home) == "connect: PermissionError"
    nothing_done(shared_home, port)


def test_the_socket_refuses_a_user_who_is_not_root_even_when_its_mode_lets_him_in(
    running_xend: XendHome, own_debug_port: Callable[[], DebugPort], stranger: str,
) -> None:
    port = own_debug_port()
    for folder in (running_xend.root, running_xend.run_dir):
        folder.chmod(0o711)
    running_xend.debug_socket.chmod(0o666)
    uid = int(subprocess.run(["id", "-u", stranger], capture_output=True, text=True,
                             check=True).stdout)
    said = attempt_as(stranger, running_xend).splitlines()
    assert said[-1] == ("(err (type Forbidden) (value 'the debug socket serves only root, "
                        f"not uid {uid}'))"), said
    nothing_done(running_xend, port)
    assert f"Debug port: refused uid {uid}" in running_xend.logfile.read_text()


def test_over_tcp_the_harmless_requests_work_and_the_others_need_root_on_the_socket(
    xend_home: Callable[..., XendHome],
) -> None:
    home = xend_home(TCP)
    home.start()
    assert started_line(home).endswith(
        f"unix://{home.debug_socket}, tcp://127.0.0.1:{home.event_port}")
    with connections(home, tcp=True) as tcp, connections(home) as root:
        port = tcp()
        assert port.request("help") == ["ok", OPS]
        assert port.request("info") == ["ok", ["info"]]
        assert port.request("(sys.subscribe xend.test.*)") == ["ok"]
        for op, line in ROOT_ONLY.items():
            assert err_value(port.request(line)) == (
                f"{op} needs root over the debug socket {home.debug_socket}; "
                "it is refused over TCP"), line
        # Root injects on the socket; the TCP client sees it, and nothing of its own.
        assert root().request("(sys.inject (xend.test.root))") == ["ok"]
        assert port.event("xend.test.root")
        assert port.events == []
        assert home.alive()
        assert root().request("(exit)") == ["ok"]
    wait_for(lambda: home.xend("status").returncode == 3, timeout=60, what="xend to stop")


def test_tcp_clients_not_in_hosts_allow_are_refused(
    xend_home: Callable[..., XendHome],
) -> None:
    home = xend_home(TCP + "\n(xend-hosts-allow ^10\\.1\\.2\\.3$)")
    home.start()
    port = DebugPort(home, tcp=True)
    with contextlib.closing(port):
        assert err_value(port.form()) == "client 127.0.0.1 is not allowed by xend-hosts-allow"
        assert port.closed_by_xend()
    with connections(home) as root:
        assert root().request("help") == ["ok", OPS]
