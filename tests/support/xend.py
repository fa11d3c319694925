"""What a test says to a xend over HTTP (its Unix socket), status codes visible; its
events; and ``xm`` as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.events import Events
from tests.support.home import XendHome
from tests.support.terminal import terminal
from xend_actors import sxp

SIM_KERNEL = "/boot/vmlinuz-sim"

# The installed ``xm`` script beside this Python.
XM = shutil.which("xm", path=os.path.dirname(sys.executable))


def run_xm(server: str | XendHome | None, *args: str, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``xm`` against the xend at ``server`` (host:port), over TCP with an
    admin token to the xend of a home, or as ``env`` says (None)."""
    assert XM, "the xm script is not installed beside this Python (pip install -e .)"
    if server is None:
        reach = {}
    elif isinstance(server, str):
        reach = {"XEND": server}
    else:
        reach = {"XEND": f"127.0.0.1:{server.http_port}", "XEND_TOKEN": server.admin_token()}
    return subprocess.run([XM, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **reach, **(env or {})},
                          stdin=subprocess.DEVNULL)

def sim_vm(name: str, *extra: sxp.Value, memory: int = 32) -> sxp.Value:
    """A config of a sim domain called ``name`` (``extra`` are more ``(vm ...)`` fields)."""
    return ["vm", ["name", name], ["memory", str(memory)],
            ["image", ["linux", ["kernel", SIM_KERNEL]]], *extra]

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
