"""xend-fence: the fencing watchdog of a pool member, a process that outlives xend.

A member fences itself (destroys its HA domains) when it cannot renew its lease for
half the TTL, so that the member restarting them elsewhere never runs a second copy.
A dead or hung xend (``kill -9``, a crash, a clean stop) fences nothing; this process
does it then, as a node's hardware watchdog reboots it when its HA manager stops
petting it. xend starts it detached in its run dir (``watchdog_client.py``), as it starts
xend-simhv, and tells it the names it guards and a deadline, extended at each renewal
(``watchdog_protocol.py``). When the deadline passes without a newer one, the watchdog
opens the configured hypervisor as xend does, destroys every domain whose name is
guarded, logs each, and writes what it fenced in ``<run dir>/fenced/`` for the next
xend to report; then it looks again each ``SWEEP_PERIOD`` while the deadline stays
passed (a hung xend that wakes up must not bring a guarded domain back unwatched).
It keeps running and serving: a xend started again connects to it and says its names
and, once it holds the lease again, a new deadline.

One thread: the listener, the clients (root's only: ``SO_PEERCRED``) and the clock
share one selector.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from xend_actors import sxp
from xend_actors.config import Hypervisor as HypervisorKind
from xend_actors.config import XendConfig, load_config
from xend_actors.errors import Conflict, XendError
from xend_actors.pidfile import PidFile
from xend_actors.pool import watchdog_protocol as protocol
from xend_actors.pool.watchdog_protocol import (
    FENCED_DIR,
    BadLine,
    Command,
    Verb,
    pid_path,
    socket_path,
)
from xend_actors.store import atomic_write

log = logging.getLogger("xend.fence")

LOG_FORMAT = "[%(asctime)s xend-fence] %(levelname)s %(message)s"
SWEEP_PERIOD = 1.0  # seconds between looks while the deadline stays passed
MAX_CLIENTS = 8
SEND_TIMEOUT = 1.0  # an answer (ping, status) a client does not read is its loss
READ_SIZE = 65536
PEERCRED = struct.Struct("3i")


# --- the state --------------------------------------------------------------------------


@dataclass
class _Client:
    sock: socket.socket
    where: str
    lines: protocol.Lines = field(default_factory=protocol.Lines)
    staged: set[str] | None = None  # the set since ``begin``


class Watchdog:
    """The guarded names, the deadline and the fencing; the sockets are ``serve``'s."""

    def __init__(self, config: XendConfig) -> None:
        self._config = config
        self.guarded: set[str] = set()
        self.deadline: float | None = None  # CLOCK_MONOTONIC; None: disarmed
        self.fenced = 0  # domains destroyed so far
        self._next_sweep = 0.0
        self._passed = False  # the deadline passed and is not extended yet
        self._unreachable = False  # the last sweep could not reach the hypervisor

    def apply(self, client: _Client, command: Command) -> bytes | None:
        """Do what ``command`` says; its answer, if it has one."""
        verb = command.verb
        if verb is Verb.GUARD:
            target = self.guarded if client.staged is None else client.staged
            if command.name not in target and len(target) >= protocol.MAX_GUARDED:
                raise BadLine(f"at most {protocol.MAX_GUARDED} names are guarded")
            target.add(command.name)
        elif verb is Verb.UNGUARD:
            self.guarded.discard(command.name)
            if client.staged is not None:
                client.staged.discard(command.name)
        elif verb is Verb.BEGIN:
            client.staged = set()
        elif verb is Verb.COMMIT:
            if client.staged is None:
                raise BadLine("commit without begin")
            self.guarded, client.staged = client.staged, None
            log.info("Guarding %d domains for %s", len(self.guarded), client.where)
        elif verb is Verb.DEADLINE:
            self._set_deadline(command.at)
        elif verb is Verb.DISARM:
            log.info("Disarmed by %s: %d names no longer guarded", client.where,
                     len(self.guarded))
            self.guarded.clear()
            self.deadline = None
            self._passed = False
        elif verb is Verb.FENCE:
            log.warning("Asked to fence now by %s", client.where)
            self.deadline = time.monotonic()
            self._next_sweep = 0.0
        elif verb is Verb.PING:
            return f"xend-fence {os.getpid()}\n".encode()
        elif verb is Verb.STATUS:
            left = None if self.deadline is None else round(self.deadline - time.monotonic(), 3)
            return json.dumps({"pid": os.getpid(), "guarded": sorted(self.guarded),
                               "deadline_in": left, "fenced": self.fenced}).encode() + b"\n"
        return None

    def _set_deadline(self, at: float) -> None:
        if self._passed and at > time.monotonic():
            log.info("Armed again: the deadline is %.1f s away", at - time.monotonic())
            self._passed = False
        elif self.deadline is None:
            log.info("Armed: the deadline is %.1f s away", at - time.monotonic())
        self.deadline = at

    def wait_time(self) -> float | None:
        """How long the selector may sleep: until the deadline or the next sweep."""
        if self.deadline is None or not self.guarded:
            return None
        now = time.monotonic()
        if now < self.deadline:
            return self.deadline - now
        return max(0.0, self._next_sweep - now)

    def tick(self) -> None:
        """Fence if the deadline has passed and a sweep is due."""
        if self.deadline is None or not self.guarded:
            return
        now = time.monotonic()
        if now < self.deadline or now < self._next_sweep:
            return
        if not self._passed:
            self._passed = True
            log.warning("Fencing %d guarded names: the deadline passed %.3f s ago and no "
                        "newer one came", len(self.guarded), now - self.deadline)
        self._next_sweep = now + SWEEP_PERIOD
        self._sweep()

    def _sweep(self) -> None:
        """Destroy every domain with a guarded name, and record those destroyed."""
        try:
            destroyed = destroy_guarded(self._config, self.guarded)
        except (XendError, OSError) as error:
            if not self._unreachable:
                log.error("Cannot reach the hypervisor to fence: %s", error)
            self._unreachable = True
            return
        self._unreachable = False
        for name, domid in destroyed:
            log.warning("Fenced domain %s (id %d)", name, domid)
        if destroyed:
            self.fenced += len(destroyed)
            self._record(destroyed)

    def _record(self, destroyed: list[tuple[str, int]]) -> None:
        folder = self._config.run_dir / FENCED_DIR
        now = time.time()
        record: sxp.Value = ["fenced", ["time", f"{now:.3f}"],
                             *(["domain", ["name", name], ["domid", str(domid)]]
                               for name, domid in destroyed)]
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            atomic_write(folder / f"{time.time_ns()}", (sxp.show(record) + "\n").encode())
        except (OSError, XendError) as error:
            log.error("Could not record what was fenced in %s: %s", folder, error)


def destroy_guarded(config: XendConfig, guarded: set[str]) -> list[tuple[str, int]]:
    """Destroy the domains of the configured hypervisor whose names are ``guarded``; the
    (name, domid) of each. A hypervisor that does not run is not started: it runs no
    domain. XendError (or OSError) if it cannot be reached."""
    if config.hypervisor is HypervisorKind.QEMU:
        # Not through a driver: it would adopt every guest, whose monitors a xend that
        # is alive (cut off from etcd) still holds.
        from xend_actors.hypervisor.qemu.fencing import destroy_named

        return destroy_named(config.run_dir, guarded)
    if config.hypervisor is not HypervisorKind.SIM:
        raise XendError(f"the {config.hypervisor.value} driver is not available")
    from xend_actors.hypervisor.sim.driver import SimDriver

    driver = SimDriver(config.run_dir / "simhv.sock")
    destroyed = []
    try:
        for domain in driver.list_domains():
            if domain.domid == 0 or domain.name not in guarded:
                continue
            try:
                driver.destroy(domain.domid)
            except XendError as error:  # gone meanwhile, say: the others still go
                log.error("Could not fence domain %s (id %d): %s", domain.name,
                          domain.domid, error.message)
                continue
            destroyed.append((domain.name, domain.domid))
    except (XendError, OSError) as error:  # the connection lost: those destroyed count
        log.error("Fencing cut off: %s", error)
    finally:
        driver.close()
    return destroyed


# --- the sockets ------------------------------------------------------------------------


def serve(config: XendConfig, wakeup: socket.socket) -> None:
    """Serve on the run dir's socket until a byte comes on ``wakeup`` (a signal's)."""
    path = socket_path(config)
    listener = _listen(path)
    watchdog = Watchdog(config)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup, selectors.EVENT_READ)
    clients: dict[socket.socket, _Client] = {}
    trusted = {0, os.geteuid()}
    log.info("Serving on %s for %s (pid %d)", path, config.hypervisor.value, os.getpid())

    def drop(client: _Client, error: str = "") -> None:
        if error:
            log.warning("Refused %s: %s", client.where, error)
            with contextlib.suppress(OSError):
                client.sock.sendall(f"error {error}\n".encode())
        selector.unregister(client.sock)
        del clients[client.sock]
        client.sock.close()

    stopping = False
    try:
        while not stopping:
            for key, _events in selector.select(watchdog.wait_time()):
                if key.fileobj is wakeup:
                    stopping = True
                    continue
                if key.fileobj is listener:
                    _accept(listener, selector, clients, trusted)
                    continue
                client = clients[key.fileobj]  # type: ignore[index]
                try:
                    data = client.sock.recv(READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    drop(client)
                    continue
                try:
                    for line in client.lines.feed(data):
                        answer = watchdog.apply(client, protocol.parse(line))
                        if answer is not None:
                            client.sock.sendall(answer)
                except BadLine as error:
                    drop(client, str(error))
                except OSError:
                    drop(client)
            watchdog.tick()
    finally:
        for sock in list(clients):
            sock.close()
        listener.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        if watchdog.guarded and watchdog.deadline is not None:
            log.warning("Stopped with %d names guarded: unwatched until a xend starts "
                        "a watchdog again", len(watchdog.guarded))
        log.info("Stopped")


def _accept(listener: socket.socket, selector: selectors.BaseSelector,
            clients: dict[socket.socket, _Client], trusted: set[int]) -> None:
    try:
        sock, _ = listener.accept()
    except OSError:
        return
    pid, uid, _gid = PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    where = f"uid {uid} (pid {pid})"
    refusal = ""
    if uid not in trusted:
        refusal = f"the fencing watchdog serves only root, not uid {uid}"
    elif len(clients) >= MAX_CLIENTS:
        refusal = f"too many clients (at most {MAX_CLIENTS})"
    if refusal:
        log.warning("Refused %s: %s", where, refusal)
        with sock, contextlib.suppress(OSError):
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(f"error {refusal}\n".encode())
        return
    sock.settimeout(SEND_TIMEOUT)
    clients[sock] = _Client(sock, where)
    selector.register(sock, selectors.EVENT_READ)


def _listen(path: Path) -> socket.socket:
    """The listening socket (0600) at ``path``, in place of one a dead watchdog left;
    a live one's, or anything else there, fails the start (the pid file's lock is held,
    so a socket that answers is not ours to take)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise Conflict(f"cannot listen on {path}: it exists and is not a socket")
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)  # in a run dir only root enters, until then
        listener.listen(MAX_CLIENTS)
    except OSError as error:
        listener.close()
        raise Conflict(f"cannot listen on {path}: {error.strerror}") from None
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xend-fence",
        description="A pool member's fencing watchdog: destroys the guarded domains when "
                    "xend stops renewing its deadline.")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="xend's config file (default: xend's own default)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        config = load_config(options.config)
    except XendError as error:
        log.error("%s", error.message)
        return 1
    pid_file = PidFile(pid_path(config))
    try:
        pid_file.acquire()
    except Conflict:
        log.error("Already running (pid %s)", pid_file.running_pid())
        return 1
    # A signal writes a byte on the wakeup socket, which the selector watches: a select
    # that a signal interrupts is otherwise resumed (PEP 475).
    wakeup, signalled = socket.socketpair()
    signalled.setblocking(False)
    signal.set_wakeup_fd(signalled.fileno())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: None)
    try:
        serve(config, wakeup)
    except XendError as error:
        log.error("%s", error.message)
        return 1
    finally:
        with contextlib.suppress(OSError):
            pid_file.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
