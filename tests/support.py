"""A whole xend in a temporary folder: its config, its command and its clients.

Integration tests start real ``xend`` processes through the installed command, the
way a user does, each in its own short folder under /tmp (Unix socket paths are
limited to 108 bytes, so pytest's long tmp paths will not do).

- ``XendHome``: one xend's folder and config; ``start``, a quick ``stop`` (SIGTERM, for
  fixtures: the tests of ``xend stop`` itself use the command) and ``tear_down``.
- ``Xend``: what a test says to a xend over HTTP (its Unix socket), status codes visible,
  and its events (``Events``), read from the event API, never grepped from the log.
- ``SharedXend``: one xend that the tests of a module take turns on (see conftest.py).
- ``Reaper``: tears homes down on threads of their own while the next tests run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from xend_actors import sxp
from xend_actors.events.event import Event

# httpx sends a User-Agent and "Accept: */*", which the original rule takes for a browser.
SXP_ACCEPT = {"Accept": "application/sxp"}

SIM_KERNEL = "/boot/vmlinuz-sim"
# Console ports are console-port-base + the domain id; a xend that many tests share makes
# many domains, so every xend gets a range this wide that was free when it was made.
CONSOLE_SPAN = 128
STOP_TIMEOUT = 60.0


# Ports this process handed out lately, as (base, span): a xend being torn down in the
# background, or one a module shares, keeps its ports while the next xend is made.
_handed_out: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)


def _worker_band(low: int, high: int) -> tuple[int, int]:
    """This pytest-xdist worker's share of ``low``..``high``, so that xends of workers
    running side by side never get the same ports (the whole of it without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (high - low) // max(count, 1)
    return low + index * width, low + (index + 1) * width


def free_port_base(span: int = 1, low: int = 20000, high: int = 30000) -> int:
    """A random free port range below the kernel's ephemeral range (32768 and up), so
    that no outgoing connection takes the port between this check and xend's bind; in
    this worker's band and apart from the ranges handed out lately."""
    low, high = _worker_band(low, high)
    for _ in range(10000):
        base = random.randrange(low, high - span)
        if any(base < other + size and other < base + span for other, size in _handed_out):
            continue
        try:
            for port in range(base, base + span):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.append((base, span))
        return base
    raise AssertionError(f"no {span} free ports in a row between {low} and {high}")


def free_port() -> int:
    """A free port for a xend's HTTP or debug listener (apart from console ranges)."""
    return free_port_base(low=12000, high=20000)


# The installed ``xm`` script beside this Python.
XM = shutil.which("xm", path=os.path.dirname(sys.executable))


def run_xm(server: str, *args: str, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``xm`` against the xend at ``server`` (host:port)."""
    assert XM, "the xm script is not installed beside this Python (pip install -e .)"
    return subprocess.run([XM, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "XEND": server, **(env or {})},
                          stdin=subprocess.DEVNULL)


def xend_command() -> list[str]:
    """The installed ``xend`` script beside this Python, else the module."""
    script = shutil.which("xend", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "xend_actors.cli"]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.05)


def sim_vm(name: str, *extra: sxp.Value, memory: int = 32) -> sxp.Value:
    """A config of a sim domain called ``name`` (``extra`` are more ``(vm ...)`` fields)."""
    return ["vm", ["name", name], ["memory", str(memory)],
            ["image", ["linux", ["kernel", SIM_KERNEL]]], *extra]


# --- processes ---------------------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited, at most ``timeout`` s; whether it did."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while not process_gone(pid):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([handle], [], [], min(left, 1.0))
        return True
    finally:
        os.close(handle)


def stop_process(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL it after ``timeout`` s. Whether it
    stopped on the SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10)
    return False


def kill_guests(run_dir: Path) -> None:
    """Kill every qemu a xend left in ``run_dir`` (they outlive xend on purpose)."""
    for state in (run_dir / "qemu").glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(state.read_text())["pid"])
            if pid and "qemu" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10)


# --- a xend's folder -----------------------------------------------------------------------------


@dataclass
class XendHome:
    """One xend's folder: config, run dir, store and log, and ways to talk to it."""

    root: Path
    http_port: int = field(default_factory=free_port)
    event_port: int = field(default_factory=free_port)
    console_port_base: int = field(default_factory=lambda: free_port_base(span=CONSOLE_SPAN))
    extra: str = ""
    netns: str = ""  # run xend (and so its simhv) in this network namespace

    @property
    def config_file(self) -> Path:
        return self.root / "xend-config.sxp"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def unix_path(self) -> Path:
        return self.run_dir / "xend.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "xend.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "log" / "xend.log"

    @property
    def dbroot(self) -> Path:
        return self.root / "db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> None:
        # The first occurrence of an option wins, so a test's own settings go first.
        self.config_file.write_text(
            self.extra + "\n"
            f"(xend-port {self.http_port})\n"
            "(xend-address 127.0.0.1)\n"
            f"(xend-event-port {self.event_port})\n"
            f"(console-port-base {self.console_port_base})\n"
            "(console-address 127.0.0.1)\n"
            "(xend-unix-server yes)\n"
            f"(xend-unix-path {self.unix_path})\n"
            f"(xend-run-dir {self.run_dir})\n"
            f"(dbroot {self.dbroot})\n"
            f"(logfile {self.logfile})\n"
            "(loglevel DEBUG)\n"
            "(minimum-restart-time 20)\n"
            # No links on the host: vifs get no tap, and need no bridge.
            "(sim-taps no)\n"
            "(vif-bridge null)\n"
        )

    @property
    def simhv_socket(self) -> Path:
        return self.run_dir / "simhv.sock"

    def kill_simhv(self) -> None:
        """Stop the simulated hypervisor xend started here (it outlives xend on purpose)."""
        try:
            pid = int((self.run_dir / "simhv.pid").read_text())
        except (FileNotFoundError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)

    def xend(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``xend`` command on this folder's config."""
        netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.run(
            [*netns, *xend_command(), "--config", str(self.config_file), *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """``xend start``, which must succeed."""
        started = self.xend("start")
        assert started.returncode == 0, started.stderr + self.log_tail()

    def pid(self) -> int | None:
        """The pid of the xend running here, if one is (its pid file can be stale)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        if str(self.config_file).encode() not in cmdline or process_gone(pid):
            return None
        return pid

    def alive(self) -> bool:
        """Whether a xend runs here and answers on its Unix socket."""
        if self.pid() is None:
            return False
        try:
            with self.unix_http() as http:
                return http.get("/xend/", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """``kill -9`` the xend running here and wait until it is gone."""
        pid = self.pid()
        assert pid is not None, "no xend runs here"
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid, 10), f"xend {pid} still there after SIGKILL"

    def stop(self) -> None:
        """Stop the xend running here, as ``xend stop`` does (SIGTERM, wait until it exits)
        but without starting a command to do it. For fixtures; ``xend stop`` has tests."""
        pid = self.pid()
        if pid is not None:
            assert stop_process(pid), f"xend {pid} did not stop within {STOP_TIMEOUT:g} s"

    def tear_down(self) -> None:
        """Stop xend, its simhv and its qemus, and remove the folder."""
        try:
            self.stop()
        finally:
            self.kill_simhv()
            kill_guests(self.run_dir)
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n" + self.logfile.read_text()[-3000:]
        return ""

    # verify=False: no TLS here, and loading the CA bundle costs a client 40 ms of CPU.
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=SXP_ACCEPT, verify=False)

    def unix_http(self, timeout: float = 30) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.unix_path), verify=False)
        return httpx.Client(base_url="http://xend", transport=transport, timeout=timeout,
                            headers=SXP_ACCEPT, verify=False)

    def get_sxp(self, path: str) -> sxp.Value:
        with self.http() as client:
            reply = client.get(path)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/sxp"
        return sxp.parse(reply.text)


# Every folder new_home made in this process: the Reaper checks at the end that no
# process (xend, xend-simhv, qemu) of any of them is left.
_homes_made: list[Path] = []


def new_home(extra: str = "") -> XendHome:
    home = XendHome(Path(tempfile.mkdtemp(prefix="xend-")), extra=extra)
    home.write_config()
    _homes_made.append(home.root)
    return home


def leftover_processes() -> dict[int, str]:
    """The processes still running out of a folder new_home made: pid → command line."""
    roots = [str(root).encode() + b"/" for root in _homes_made]
    left = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(root in cmdline for root in roots) and not process_gone(int(entry.name)):
            left[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return left


# --- events --------------------------------------------------------------------------------------


def event_line(event: Event) -> str:
    """An event as ``NAME VALUE``, the way xend's log shows it."""
    return f"{event.name} {sxp.show(event.value)}"


class Events:
    """A xend's events, read from its event API (``GET /xend/event/?since=N``).

    ``since`` is where a test's view begins: ``mark()`` moves it to the last event so far
    (a shared xend marks it when each test begins), so ``lines()`` and ``wait()`` see the
    events of this test only.
    """

    def __init__(self, home: XendHome) -> None:
        self.home = home
        self.since = 0
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def fetch(self, since: int, timeout: float = 0) -> list[Event]:
        """One long-poll: the events after ``since``, waiting up to ``timeout`` s for one."""
        params = {"since": since, "timeout": math.ceil(timeout)}
        for attempt in (1, 2):
            if self._http is None:
                self._http = self.home.unix_http(timeout=timeout + 30)
            try:
                reply = self._http.get("/xend/event/", params=params,
                                       timeout=timeout + 30)
                break
            except httpx.TransportError:  # a connection to a xend that has been restarted
                self.close()
                if attempt == 2:
                    raise
        assert reply.status_code == 200, reply.text
        return [Event.from_record(record) for record in sxp.parse(reply.text)]

    def all(self, since: int | None = None) -> list[Event]:
        """Every event after ``since`` (default: the mark) that xend has now."""
        seen: list[Event] = []
        after = self.since if since is None else since
        while batch := self.fetch(seen[-1].seq if seen else after):
            seen += batch
        return seen

    def last(self) -> int:
        """The number of the last event so far."""
        last = self.since
        while batch := self.fetch(last):
            last = batch[-1].seq
        return last

    def mark(self) -> int:
        """Begin the view after the last event so far; that event's number."""
        self.since = self.last()
        return self.since

    def lines(self, since: int | None = None) -> list[str]:
        """The events after ``since`` (default: the mark) as ``NAME VALUE`` lines."""
        return [event_line(event) for event in self.all(since)]

    def has(self, line: str) -> bool:
        return line in self.lines()

    def wait(self, name: str, value: sxp.Value | None = None, *,
             match: Callable[[Event], bool] | None = None, since: int | None = None,
             timeout: float = 30.0) -> Event:
        """The first event after ``since`` (default: the mark) called ``name`` with ``value``
        (any value if None) for which ``match`` holds; waits for it up to ``timeout`` s."""
        after = self.since if since is None else since
        deadline = time.monotonic() + timeout
        seen: list[Event] = []
        while True:
            left = deadline - time.monotonic()
            batch = self.fetch(after, timeout=min(5.0, max(left, 0.0)))
            for event in batch:
                if (event.name == name and (value is None or event.value == value)
                        and (match is None or match(event))):
                    return event
            seen += batch
            if batch:
                after = batch[-1].seq
            elif left <= 0:
                wanted = name if value is None else f"{name} {sxp.show(value)}"
                raise AssertionError(
                    f"no event {wanted} within {timeout:g} s; events after the mark: "
                    f"{[event_line(e) for e in seen][-30:]}{self.home.log_tail()}")

    def wait_line(self, line: str, since: int | None = None, timeout: float = 30.0) -> Event:
        """Wait for the event that reads ``NAME VALUE`` (as in the log)."""
        name, _, value = line.partition(" ")
        return self.wait(name, match=lambda e: sxp.show(e.value) == value, since=since,
                         timeout=timeout)

    def count(self, line: str) -> int:
        return self.lines().count(line)


# --- what a test says to a xend ----------------------------------------------------------------


class Xend:
    """Plain HTTP to one xend over its Unix socket, status codes visible; its events."""

    def __init__(self, home: XendHome) -> None:
        self.home = home
        self.http = home.unix_http(timeout=120)
        self.events = Events(home)

    def close(self) -> None:
        self.http.close()
        self.events.close()

    def reconnect(self) -> None:
        """A new connection (after xend was started again)."""
        self.close()
        self.http = self.home.unix_http(timeout=120)

    def start(self) -> None:
        """Start this xend again (after a stop or a kill)."""
        self.home.start()
        self.reconnect()

    # --- requests ----------------------------------------------------------------------------

    def get(self, path: str, **params: object) -> httpx.Response:
        return self.http.get(path, params=params)  # type: ignore[arg-type]

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.http.post(path, data=fields)

    def op(self, dom: str | int, op: str, **fields: str) -> httpx.Response:
        """POST ``op`` to the domain ``dom``."""
        return self.post(f"/xend/domain/{dom}", op=op, **fields)

    @staticmethod
    def ok(reply: httpx.Response, status: int = 200) -> sxp.Value:
        assert reply.status_code == status, reply.text
        return sxp.parse(reply.text)

    @staticmethod
    def error(reply: httpx.Response, status: int) -> str:
        """The message of an error reply with ``status``."""
        assert reply.status_code == status, reply.text
        value = sxp.parse(reply.text)
        assert sxp.name(value) == "xend.err", reply.text
        return str(value[1])

    def get_sxp(self, path: str, **params: object) -> sxp.Value:
        return self.ok(self.get(path, **params))

    # --- domains -------------------------------------------------------------------------------

    def create(self, config: str | sxp.Value, *, unpause: bool = False) -> sxp.Value:
        """Create a domain (201); its info. Unpaused if ``unpause``."""
        text = config if isinstance(config, str) else sxp.show(config)
        info = self.ok(self.post("/xend/domain/", op="create", config=text), 201)
        if unpause:
            self.ok(self.op(sxp.child_value(info, "name"), "unpause"))
        return info

    def start_sim(self, name: str, *devices: sxp.Value, extra: tuple = ()) -> sxp.Value:
        """Create and unpause a sim domain with these devices; its info."""
        return self.create(sim_vm(name, *extra, *(["device", d] for d in devices)),
                           unpause=True)

    def names(self) -> list[str]:
        return self.get_sxp("/xend/domain/")  # type: ignore[return-value]

    def info(self, dom: str | int) -> sxp.Value:
        return self.get_sxp(f"/xend/domain/{dom}")

    def state(self, dom: str | int) -> str:
        return str(sxp.child_value(self.info(dom), "state"))

    def domid(self, dom: str) -> str:
        return str(sxp.child_value(self.info(dom), "id"))

    def console_port(self, dom: str | int) -> int:
        return int(sxp.child_value(sxp.child(self.info(dom), "console"), "console_port"))

    def devices(self, dom: str, op: str) -> list:
        """The device infos of ``op`` (``vbds``, ``vifs``)."""
        return self.get_sxp(f"/xend/domain/{dom}", op=op)  # type: ignore[return-value]

    def consoles(self) -> list[str]:
        """The ports of the open consoles."""
        return self.get_sxp("/xend/console/")  # type: ignore[return-value]

    def records(self) -> list[str]:
        """The domain records in the store."""
        return sorted(p.name for p in (self.home.dbroot / "domain").iterdir() if p.is_file())

    def sessions(self) -> list[str]:
        """The transfer sessions in the store."""
        folder = self.home.dbroot / "migrate"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def sh(self, dom: str, command: str, expect: str, prompt: bytes = b"# ") -> str:
        """Type ``command`` on a sim domain's console; the output up to ``expect``."""
        with terminal(self.console_port(dom)) as term:
            term.type(command)
            return term.read_until(expect.encode(), prompt).decode()

    def destroy_all_but(self, keep: set[str], timeout: float = 60.0) -> None:
        """Destroy every domain not named in ``keep``, waiting until each has died and its
        console has closed, so that no event of theirs comes later."""
        deadline = time.monotonic() + timeout
        while doomed := [n for n in self.names() if n not in keep]:
            assert time.monotonic() < deadline, f"domains {doomed} would not go"
            for name in doomed:
                try:
                    info = self.info(name)
                except AssertionError:
                    continue  # gone meanwhile
                domid = str(sxp.child_value(info, "id"))
                port = sxp.child_value(sxp.child(info, "console") or ["console"],
                                       "console_port")
                since = self.events.last()
                reply = self.op(domid, "destroy", reason="halt")
                if reply.status_code == 404:
                    continue
                assert reply.status_code == 200, f"destroying {name}: {reply.text}"
                self.events.wait("xend.domain.died", [name, domid], since=since)
                if port is not None:
                    self.events.wait("xend.console.close", str(port), since=since)


# --- a xend that the tests of a module take turns on -----------------------------------------


class Reaper:
    """Tears down homes on threads of its own, so a test's teardown does not wait for its
    xend to stop; ``close`` waits for all and fails if any teardown did."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="reaper")
        self._jobs: list[tuple[str, Future[None]]] = []

    def submit(self, what: str, job: Callable[[], None]) -> None:
        self._jobs.append((what, self._pool.submit(job)))

    def close(self) -> None:
        """Wait for every teardown; fail if one failed or left a process behind (which is
        killed: the suite leaves the machine as it found it)."""
        self._pool.shutdown(wait=True)
        failed = [f"{what}: {future.exception()!r}" for what, future in self._jobs
                  if future.exception() is not None]
        left = leftover_processes()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not failed, "tearing down: " + "; ".join(failed)
        assert not left, f"processes left behind by the tests (killed now): {left}"


class SharedXend:
    """One xend that the tests of a module take turns on.

    ``take`` gives a test the xend alive (a new one if a test killed it or left it
    broken), its events marked at the test's beginning; ``give_back`` destroys every
    domain the test left, waiting for their last events, so the next test finds the
    xend as the module's first did: Domain-0 and nothing else.
    """

    def __init__(self, reaper: Reaper, extra: str = "",
                 make: Callable[[XendHome], Xend] = Xend) -> None:
        self.reaper = reaper
        self.extra = extra
        self.make = make
        self.current: Xend | None = None
        self.started = 0

    def take(self) -> Xend:
        xend = self.current
        if xend is None or not xend.home.alive():
            if xend is not None:
                self._discard(xend)
            home = new_home(self.extra)
            home.start()
            self.started += 1
            xend = self.current = self.make(home)
        else:
            xend.reconnect()
        xend.events.mark()
        return xend

    def give_back(self) -> None:
        xend = self.current
        if xend is None:
            return
        try:
            if not xend.home.alive():
                raise AssertionError("xend died")
            xend.destroy_all_but({"Domain-0"})
        except BaseException:
            # Whatever the test left must not reach the next one: a new xend for it.
            self.current = None
            self._discard(xend)
            raise

    def _discard(self, xend: Xend) -> None:
        xend.close()
        self.reaper.submit(str(xend.home.root), xend.home.tear_down)

    def close(self) -> None:
        if self.current is not None:
            self._discard(self.current)
            self.current = None


# --- consoles ----------------------------------------------------------------------------------


class Terminal:
    """A TCP client of a console port, reading with deadlines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seen = b""

    def close(self) -> None:
        self.sock.close()

    def read_until(self, *markers: bytes, timeout: float = 10.0) -> bytes:
        """Read until every marker has been seen, in order, since the last call."""
        deadline = time.monotonic() + timeout
        start = 0
        for marker in markers:
            while (at := self.seen.find(marker, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {marker!r} within {timeout:g} s in {self.seen!r}")
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError(f"console closed before {marker!r}: {self.seen!r}")
                self.seen += data
            start = at + len(marker)
        got, self.seen = self.seen[:start], self.seen[start:]
        return got

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r")

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the console closes the connection within ``timeout`` (output is read)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        return True


@contextlib.contextmanager
def terminal(port: int) -> Iterator[Terminal]:
    term = Terminal(port)
    try:
        yield term
    finally:
        term.close()


# --- network namespaces ----------------------------------------------------------------------


def netns_usable() -> str | None:
    """Why network namespaces can't be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


# A command typed on a sim guest's console, as a script to run inside a test's network
# namespace (``python -c SIM_SHELL PORT COMMAND``); it prints what the command answered.
SIM_SHELL = r"""
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.sendall(sys.argv[2].encode() + b"\r")
seen, deadline = b"", time.monotonic() + 10
marker = sys.argv[2].encode() + b"\r\n"
while not (marker in seen and seen.rsplit(marker, 1)[1].endswith(b"# ")):
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    seen += sock.recv(4096)
print(seen.rsplit(marker, 1)[1][:-2].decode().strip())
"""

