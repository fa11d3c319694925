"""xend's end of its fencing watchdog (xend-fence, ``watchdog.py``): starting it when
none runs, and telling it what it guards and until when.

Each call writes one short line and waits for no answer (``watchdog_protocol.py``); a
``guard`` is written before it returns, so a domain made after it is guarded. The
client keeps what it said: when the watchdog is gone (killed), the next call starts a
new one and says it all again. A new xend connects to the watchdog the last one left
running (never a second one) and, until it ``replace``s the guarded set with the whole
of its own, only adds to it: the names a dead xend guarded stay guarded, under its
last deadline, until the new xend says otherwise.

What the watchdog fenced while no xend ran is in ``<run dir>/fenced/``;
``take_fenced`` reads it (and removes it) for the next xend to log and publish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xend_actors import sxp
from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.hypervisor import detached
from xend_actors.pidfile import PidFile
from xend_actors.pool import watchdog_protocol as protocol
from xend_actors.pool.watchdog_protocol import FENCED_DIR, Verb, log_path, pid_path, socket_path

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds for a new watchdog to answer
SEND_TIMEOUT = 2.0  # a line the watchdog does not take by then: it is gone or hung
RETRY_AFTER = 5.0  # seconds a failed start puts off the next (but a guard's) try
POLL_INTERVAL = 0.02
LOG_TAIL_BYTES = 2000
MAX_RECORDS = 1000  # fenced/ files read at a time
MAX_RECORD_BYTES = 1 << 16


class WatchdogUnavailable(XendError):
    """The fencing watchdog could not be told: a guard would not hold (HTTP 503)."""

    status = 503


class FenceWatchdog:
    """The fencing watchdog of this xend: thread-safe, each call one line written."""

    def __init__(self, config: XendConfig) -> None:
        self._config = config
        self._path = socket_path(config)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._names: set[str] = set()
        self._whole = False  # whether _names is the whole set (replace or disarm said so)
        self._deadline: float | None = None  # CLOCK_MONOTONIC
        self._failing = False  # the last write failed (logged once, until one works)
        self._retry = 0.0  # CLOCK_MONOTONIC: no new start before, but for a guard
        self._closed = False  # xend is stopping: nothing more is said

    def start(self) -> None:
        """Connect now, starting the watchdog if none runs; WatchdogUnavailable if it
        cannot be started."""
        with self._lock:
            if self._sock is None:
                self._connect(b"")

    def guard(self, name: str) -> None:
        """Guard ``name`` from now on (before its domain is made); WatchdogUnavailable
        if the watchdog cannot be told."""
        if not protocol.is_name(name):
            raise XendError(f"cannot guard {name[:80]!r}: not a domain name")
        with self._lock:
            known = name in self._names
            self._names.add(name)
            try:
                self._send(protocol.guard(name), must=True)
            except WatchdogUnavailable:
                if not known:  # refused (its domain is not made): not for the next watchdog
                    self._names.discard(name)
                raise

    def unguard(self, name: str) -> None:
        """``name`` is gone for good, or no longer this member's."""
        if not protocol.is_name(name):
            return
        with self._lock:
            self._names.discard(name)
            self._send(protocol.unguard(name))

    def replace(self, names: Iterable[str]) -> None:
        """The guarded set is ``names``, all of it (after a member's reconcile)."""
        with self._lock:
            self._names = {name for name in names if protocol.is_name(name)}
            self._whole = True
            self._send(self._whole_set())

    def deadline(self, seconds: float, *, since: float | None = None) -> None:
        """Fence ``seconds`` after ``since`` (``time.monotonic()``; now if None) unless
        extended: ``deadline(0.6 * ttl, since=when_the_renewal_was_sent)``."""
        at = (time.monotonic() if since is None else since) + seconds
        with self._lock:
            self._deadline = at
            self._send(protocol.deadline(at))

    def passed(self) -> bool:
        """Whether the last deadline told has passed (the watchdog fences, or did)."""
        with self._lock:
            return self._deadline is not None and time.monotonic() >= self._deadline

    def disarm(self) -> None:
        """Nothing guarded, no deadline (a member that left its pool with no HA domain)."""
        with self._lock:
            self._names.clear()
            self._whole = True
            self._deadline = None
            self._send(protocol.simple(Verb.DISARM))

    def fence_now(self) -> None:
        """Destroy the guarded domains now (a member about to give up its lease)."""
        with self._lock:
            self._send(protocol.simple(Verb.FENCE), must=True)

    def close(self) -> None:
        """Let go of the connection, for good; the watchdog goes on with what it was
        told (a renewal under way as xend stops does not push a fence off again)."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    # --- the wire ---------------------------------------------------------------------

    def _send(self, line: bytes, *, must: bool = False) -> None:
        """Write ``line``; on a new connection (the watchdog gone, or never reached)
        everything this client said goes first."""
        if self._closed:
            if must:
                raise WatchdogUnavailable("the fencing watchdog is not told more: xend stops")
            return
        if self._sock is not None:
            try:
                self._sock.sendall(line)
                return
            except OSError:
                self._sock.close()
                self._sock = None
        # A renewal's deadline is sent on the lease's thread: a watchdog that cannot be
        # started must not hold up each renewal for the whole START_TIMEOUT.
        if not must and time.monotonic() < self._retry:
            return
        try:
            self._connect(line)
        except WatchdogUnavailable as error:
            self._retry = time.monotonic() + RETRY_AFTER
            if must:
                raise
            if not self._failing:
                log.error("%s; trying again in %g s", error.message, RETRY_AFTER)
            self._failing = True

    def _connect(self, line: bytes) -> None:
        """A connection to the watchdog (started if none answers) told everything, then
        ``line``."""
        try:
            started = ensure_watchdog(self._config)
            sock = _open(self._path)
        except (OSError, XendError) as error:
            message = error.message if isinstance(error, XendError) else str(error)
            raise WatchdogUnavailable(f"the fencing watchdog cannot be reached: {message}") \
                from None
        state = self._whole_set() if self._whole else b"".join(map(protocol.guard,
                                                                    sorted(self._names)))
        if self._deadline is not None:
            state += protocol.deadline(self._deadline)
        try:
            sock.sendall(state + line)
        except OSError as error:
            sock.close()
            raise WatchdogUnavailable(f"the fencing watchdog cannot be told: {error}") \
                from None
        self._sock = sock
        if started is not None:
            log.info("Started the fencing watchdog (pid %d) and told it %d guarded names",
                     started.pid, len(self._names))
        elif self._failing:
            log.info("The fencing watchdog answers again: told %d guarded names",
                     len(self._names))
        self._failing = False

    def _whole_set(self) -> bytes:
        return b"".join([protocol.simple(Verb.BEGIN), *map(protocol.guard, sorted(self._names)),
                         protocol.simple(Verb.COMMIT)])


def _open(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(SEND_TIMEOUT)
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


# --- starting the watchdog --------------------------------------------------------------


def ensure_watchdog(config: XendConfig,
                    timeout: float = START_TIMEOUT) -> subprocess.Popen[bytes] | None:
    """Make sure a watchdog answers in ``config``'s run dir; start one if none does.
    The process started, or None if one ran already; XendError if none can be."""
    path = socket_path(config)
    if watchdog_answers(path):
        return None
    config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    logfile = log_path(config)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    command = [*watchdog_command(),
               *(["--config", str(config.source.absolute())] if config.source else [])]
    process = detached.start(command, logfile)
    outcome = detached.wait_until(process, lambda: watchdog_answers(path), timeout=timeout,
                                  poll=POLL_INTERVAL)
    if outcome is detached.Outcome.READY:
        return process
    if outcome is detached.Outcome.EXITED and watchdog_answers(path):
        return None  # another xend's watchdog won the race
    try:
        said = detached.tail(logfile, LOG_TAIL_BYTES)
    except OSError as error:
        said = f"(cannot read {logfile}: {error.strerror})"
    if outcome is detached.Outcome.EXITED:
        raise XendError(f"xend-fence exited with status {process.returncode} before it "
                        f"answered on {path}: {said}")
    raise XendError(f"xend-fence (pid {process.pid}) did not answer on {path} within "
                    f"{timeout:g} s: {said}")


def disarm_left_over(config: XendConfig) -> None:
    """Disarm the watchdog a pool member left in ``config``'s run dir, if one answers: a
    xend out of any pool starts there, and its domains are its own (the guards' HA
    domains were fenced at the deadline, or are this host's alone now)."""
    path = socket_path(config)
    if not watchdog_answers(path):
        return
    try:
        with _open(path) as sock:
            sock.sendall(protocol.simple(Verb.DISARM))
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # the watchdog has read it once it closes
    except OSError as error:
        log.error("Could not disarm the fencing watchdog a pool member left: %s", error)
        return
    log.warning("Disarmed the fencing watchdog a pool member left in %s: this xend is in "
                "no pool", config.run_dir)


def watchdog_answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether a watchdog answers a ping on ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(protocol.simple(Verb.PING))
            return sock.recv(64).startswith(b"xend-fence ")
    except OSError:
        return False


def watchdog_pid(config: XendConfig) -> int | None:
    """The pid of the watchdog running in ``config``'s run dir, if one does."""
    return PidFile(pid_path(config)).running_pid()


def watchdog_command() -> list[str]:
    """The installed ``xend-fence`` script beside this Python, else the module."""
    script = shutil.which("xend-fence", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "xend_actors.pool.watchdog"]


# --- what was fenced --------------------------------------------------------------------


@dataclass(frozen=True)
class Fenced:
    """One sweep of the watchdog: when, and the domains it destroyed (name, id)."""

    time: float
    domains: tuple[tuple[str, int], ...]


def take_fenced(run_dir: Path) -> list[Fenced]:
    """What the watchdog fenced since the last call, oldest first; the records read are
    removed (one that cannot be read is logged and removed)."""
    folder = run_dir / FENCED_DIR
    try:
        files = sorted(path for path in folder.iterdir() if path.name.isdigit())
    except FileNotFoundError:
        return []
    taken = []
    for path in files[:MAX_RECORDS]:
        try:
            taken.append(_read_record(path))
        except (OSError, ValueError, sxp.ParseError) as error:
            log.warning("Fence record %s is unreadable (%s); removed", path, error)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return taken


def _read_record(path: Path) -> Fenced:
    with open(path, "rb") as file:
        data = file.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError("too long")
    record = sxp.parse(data.decode())
    if not isinstance(record, list) or record[:1] != ["fenced"]:
        raise ValueError("not a (fenced ...) record")
    domains = []
    for domain in sxp.children(record, "domain"):
        name, domid = sxp.child_value(domain, "name"), sxp.child_value(domain, "domid")
        if not isinstance(name, str) or not isinstance(domid, str) or not domid.isdigit():
            raise ValueError("a domain without its name and id")
        domains.append((name, int(domid)))
    return Fenced(float(str(sxp.child_value(record, "time"))), tuple(domains))
