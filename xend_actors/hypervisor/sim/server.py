"""xend-simhv: the simulated hypervisor's process, serving its model on a Unix socket.

One asyncio event loop runs everything — every connection, every guest's timers and
console — so thousands of domains cost no threads. ``main`` is the ``xend-simhv``
command: it runs in the foreground (the launcher detaches it) and stops cleanly on
SIGTERM or SIGINT, removing its socket and pid file. The wire is in protocol.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
from enum import Enum
from pathlib import Path

from xend_actors.errors import Conflict, HypervisorError, XendError
from xend_actors.hypervisor.ring.messages import Message
from xend_actors.hypervisor.sim import calls, protocol
from xend_actors.hypervisor.sim.console import Console
from xend_actors.hypervisor.sim.model import SimHypervisor
from xend_actors.pidfile import PidFile

log = logging.getLogger("xend-simhv")

LOG_FORMAT = "[%(asctime)s xend-simhv] %(levelname)s %(message)s"
WATCHER_BACKLOG = 1 << 20  # unread event bytes after which a watcher is taken for dead


class Mode(Enum):
    CALLS = "calls"
    WATCH = "watch"
    CONSOLE = "console"


class SimServer:
    """The connections of one xend-simhv and the model they share."""

    def __init__(self, hv: SimHypervisor) -> None:
        self.hv = hv
        self.connections: set[Connection] = set()
        self.watchers: set[Connection] = set()
        hv.add_listener(self._changed)
        hv.add_control_listener(self._from_guest)

    def connection(self) -> Connection:
        return Connection(self)

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()

    def _changed(self, domid: int) -> None:
        for watcher in list(self.watchers):
            watcher.send_event(protocol.event(domid))

    def _from_guest(self, domid: int, message: Message) -> None:
        for watcher in list(self.watchers):
            watcher.send_event(protocol.guest_event(domid, message))


class Connection(asyncio.Protocol):
    """One client: a stream of calls, then perhaps a watch or a console stream."""

    def __init__(self, server: SimServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._mode = Mode.CALLS
        self._lines = protocol.Lines()
        self._console: Console | None = None
        self._write_paused = False
        self._read_paused = False

    # --- asyncio's side ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._server.watchers.discard(self)
        if self._console is not None:
            self._console.detach(self)

    def data_received(self, data: bytes) -> None:
        if self._mode is Mode.CONSOLE:
            assert self._console is not None
            self._console.type(data)
            return
        if self._mode is Mode.WATCH:  # a watcher only listens
            return
        self._lines.feed(data)
        while self._mode is Mode.CALLS:
            try:
                line = self._lines.next()
            except protocol.LineTooLong as e:
                self.write(protocol.error_reply(None, e))
                continue
            if line is None:
                break
            self._handle(line)
        if self._console is not None and (rest := self._lines.rest()):
            self._console.type(rest)  # typed right behind the console request

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._mode is Mode.CALLS and self._transport is not None:
            # A client that does not read its replies gets no more requests read.
            self._transport.pause_reading()
            self._read_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        if self._console is not None:
            self._console.sink_ready()

    # --- a console's sink ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def ready(self) -> bool:
        return not self._write_paused

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- a watcher ------------------------------------------------------------------------

    def send_event(self, event: bytes) -> None:
        if self._transport is None:
            return
        if self._transport.get_write_buffer_size() > WATCHER_BACKLOG:
            log.warning("Dropping a watcher that has not read its last %d bytes of events",
                        WATCHER_BACKLOG)
            self._transport.abort()
            return
        self._transport.write(event)

    # --- calls ------------------------------------------------------------------------

    def _handle(self, line: bytes) -> None:
        try:
            request_id, call, args = protocol.parse_request(line)
        except protocol.MalformedRequest as e:
            self.write(protocol.error_reply(e.request_id, e))
            return
        hv = self._server.hv
        try:
            if call == "watch":
                self.write(protocol.ok_reply(request_id, None))
                self._mode = Mode.WATCH
                self._server.watchers.add(self)
            elif call == "console":
                console = hv.console(args.integer("domid"))
                self.write(protocol.ok_reply(request_id, None))
                self._mode = Mode.CONSOLE
                self._console = console
                console.attach(self)
            else:
                self.write(protocol.ok_reply(request_id, calls.answer(hv, call, args)))
        except XendError as e:
            self.write(protocol.error_reply(request_id, e))
        except Exception as e:  # a bug in a call must not take xend-simhv down
            log.exception("Call %s failed", call)
            failure = HypervisorError(f"xend-simhv failed on {call}: {type(e).__name__}: {e}")
            self.write(protocol.error_reply(request_id, failure))


async def serve(socket_path: Path, *, memory_mb: int, cpus: int,
                shutdown_delay: float, taps: bool = False, first_domid: int = 1) -> None:
    """Serve a new simulated host on ``socket_path`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    hv = SimHypervisor(memory_mb, cpus, loop, shutdown_delay=shutdown_delay, taps=taps,
                       first_domid=first_domid)
    server = SimServer(hv)
    _remove_stale_socket(socket_path)
    listener = await loop.create_unix_server(server.connection, str(socket_path))
    os.chmod(socket_path, 0o600)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("Serving on %s: %d MiB, %d cpus (pid %d)", socket_path, memory_mb, cpus,
             os.getpid())
    try:
        await stop.wait()
    finally:
        listener.close()
        server.close()
        hv.net.close()
        socket_path.unlink(missing_ok=True)
        log.info("Stopped")


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a dead xend-simhv; refuse to replace a live one or a file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise Conflict(f"cannot listen on {path}: it exists and is not a socket")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
    raise Conflict(f"cannot listen on {path}: another process serves on it")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xend-simhv", description="The simulated hypervisor that xend's sim driver uses.")
    parser.add_argument("--socket", type=Path, required=True, help="the Unix socket to serve on")
    parser.add_argument("--memory", type=int, default=8192, metavar="MB",
                        help="the host's memory, Domain-0's 512 MiB included (default 8192)")
    parser.add_argument("--cpus", type=int, default=4, metavar="N", help="the host's cpus")
    parser.add_argument("--log", type=Path, metavar="FILE", help="log here, not to stderr")
    parser.add_argument("--pid-file", type=Path, metavar="FILE",
                        help="write and lock the pid here while running")
    parser.add_argument("--shutdown-delay", type=float, default=0.03, metavar="S",
                        help="how long a guest takes to shut down when asked (default 0.03)")
    parser.add_argument("--taps", action="store_true",
                        help="give each vif a real tap device vifD.N (needs CAP_NET_ADMIN)")
    parser.add_argument("--first-domid", type=int, default=1, metavar="ID",
                        help="the first domain id to give (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, filename=options.log)
    pid_file = PidFile(options.pid_file) if options.pid_file else None
    if pid_file is not None:
        try:
            pid_file.acquire()
        except Conflict:
            log.error("Already running (pid %s) with pid file %s",
                      pid_file.running_pid(), options.pid_file)
            return 1
    try:
        asyncio.run(serve(options.socket, memory_mb=options.memory, cpus=options.cpus,
                          shutdown_delay=options.shutdown_delay, taps=options.taps,
                          first_domid=options.first_domid))
    except XendError as e:
        log.error("%s", e.message)
        return 1
    finally:
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
