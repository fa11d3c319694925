"""A whole xend in a temporary folder: its config, its command and its clients.

Integration tests start real ``xend`` processes through the installed command, the
way a user does, each in its own short folder under /tmp (Unix socket paths are
limited to 108 bytes, so pytest's long tmp paths will not do). ``XendHome`` is one
xend's folder and config, with ``start``, a quick ``stop`` (SIGTERM, for fixtures: the
tests of ``xend stop`` itself use the command) and ``tear_down``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.ports import CONSOLE_SPAN, free_port, free_port_base
from tests.support.processes import (
    STOP_TIMEOUT,
    kill_guests,
    process_gone,
    stop_process,
    wait_gone,
    xend_command,
)
from xend_actors import sxp

# What xm asks for; httpx's own "Accept: */*" gets SXP too (web/negotiate.py).
SXP_ACCEPT = {"Accept": "application/sxp"}

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
    _token: str = ""  # an admin API token, made on first use

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
    def debug_socket(self) -> Path:
        return self.run_dir / "debug.sock"

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
            # Most tests type on consoles through their raw ports, as the original's
            # users did; the tests of the default (WebSocket only) say (console-tcp no).
            "(console-tcp yes)\n"
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

    def kill_fence(self) -> None:
        """Stop the fencing watchdog a pool xend started here (it outlives xend too)."""
        try:
            pid = int((self.run_dir / "fence.pid").read_text())
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
            self.kill_fence()  # first: it would fence the domains of a stopped xend
            self.kill_simhv()
            kill_guests(self.run_dir)
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n" + self.logfile.read_text()[-3000:]
        return ""

    def new_token(self, name: str, role: str = "admin") -> str:
        """A new API token of this xend, made over its Unix socket: its secret."""
        with self.unix_http() as http:
            made = http.post("/xend/token", data={"op": "create", "name": name, "role": role})
        assert made.status_code == 201, made.text
        return str(sxp.child_value(sxp.parse(made.text), "secret"))

    def admin_token(self) -> str:
        """An admin API token of this xend (the same one each time: ``tests``)."""
        if not self._token:
            self._token = self.new_token("tests")
        return self._token

    # verify=False: no TLS here, and loading the CA bundle costs a client 40 ms of CPU.
    def http(self, token: str | None = None) -> httpx.Client:
        """A client of the TCP port, with an admin token unless another is given ('' none)."""
        token = self.admin_token() if token is None else token
        headers = {**SXP_ACCEPT, **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers, verify=False)

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
