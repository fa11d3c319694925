"""The persistent configuration store: what the operator asked for, kept across restarts.

Records are SXP files under ``dbroot`` in three folders, ``domain/``, ``migrate/`` and
``vnet/`` (facts §7.5). Every write is atomic (temp file, fsync, rename, fsync the
folder), so a crash leaves either the old record or the new one, never half of one.
A record that is corrupt anyway is moved aside to ``corrupt/`` and skipped, so one bad
file cannot stop xend from starting.

The module also owns reboot detection: ``<dbroot>/lastboot`` holds the host's boot
identity; when it changes, the runtime state (run dir, transfer sessions) is dropped
and the configuration (domains, vnets) is kept (DESIGN.md §2, "Two kinds of state").

A write that the file system refuses (full, read-only) raises ``StoreError``: the
request that wanted it fails with a status that says so (507 for a full disk), the
previous record is left as it was, and no temp file remains.

A store has one owner (the actor that writes it); nothing here locks.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xend_actors.errors import XendError
from xend_actors.sxp import ParseError, Value, parse_all, pretty

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
CORRUPT_DIR = "corrupt"
LASTBOOT_FILE = "lastboot"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
PROC_STAT = Path("/proc/stat")

# Keys become file names: no separators, no leading dot (which also keeps them apart
# from temp files), so a key can never reach outside its folder.
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

# What the file system says when the disk, not the request, is at fault: the status a
# client is answered with (RFC 4918's 507 Insufficient Storage; a read-only store is
# a service that cannot write now, 503).
_STORAGE_STATUS = {errno.ENOSPC: 507, errno.EDQUOT: 507, errno.EROFS: 503}


class StoreError(XendError):
    """A store write the file system refused (full, over quota, read-only)."""

    status = 507


def storage_failure(error: OSError, what: str) -> StoreError | None:
    """``error`` as a ``StoreError`` saying that ``what`` could not be written, if it is
    the disk's fault; None for any other error (a bug, or a file in the way)."""
    status = _STORAGE_STATUS.get(error.errno or 0)
    if status is None:
        return None
    reason = "the disk is full" if status == 507 else "the store is read-only"
    return StoreError(f"Cannot write {what}: {reason} ({error.strerror})", status=status)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, sync: bool = True,
                 tmp: Path | None = None) -> None:
    """Replace ``path`` with ``data`` so that readers see the old content or the new;
    ``sync=False`` for what only has to outlive xend, not the host (no fsync). The data
    goes through a temp file beside ``path``: ``tmp`` if given (a name a record already
    holds, so that a xend killed meanwhile can remove it), made afresh, never reused."""
    put_in_place(write_beside(path, data, mode, sync=sync, tmp=tmp), path, sync=sync)


def write_beside(path: Path, data: bytes, mode: int = 0o600, *, sync: bool = True,
                 tmp: Path | None = None) -> Path:
    """``atomic_write``'s first half: ``data`` whole in a new temp file beside ``path``
    (``tmp`` if given), fsynced unless not ``sync``; its name. Nothing is left if it fails."""
    folder = path.parent
    if tmp is None:
        tmp = partial_path(path)
    try:
        fd = create_new(tmp)
    except FileNotFoundError:  # the folder is made on first use, not looked for each time
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = create_new(tmp)
    try:
        try:
            os.fchmod(fd, mode)
            rest = memoryview(data)
            while rest:
                rest = rest[os.write(fd, rest):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def put_in_place(tmp: Path, path: Path, *, sync: bool = True) -> None:
    """``atomic_write``'s second half: the temp file ``tmp`` becomes ``path`` (a rename),
    the folder fsynced unless not ``sync``; the temp file is removed if it cannot be."""
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(path.parent)


def partial_path(path: Path) -> Path:
    """A fresh temp name beside ``path`` for what becomes ``path`` once it is whole."""
    return path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}"


def is_partial_of(tmp: Path, path: Path) -> bool:
    """Whether ``tmp`` is a name ``partial_path(path)`` gives: so only such a file is ever
    removed on a record's word."""
    return (tmp.parent == path.parent
            and re.fullmatch(re.escape(f"{TMP_PREFIX}{path.name}.") + "[0-9a-f]{12}",
                             tmp.name) is not None)


def create_new(path: Path, mode: int = 0o600) -> int:
    """A new file at ``path`` opened for reading and writing; FileExistsError if there is
    anything there, a symlink included."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode)


_FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    function = getattr(ctypes.CDLL(None, use_errno=True), "fallocate", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return function


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate ``length`` bytes of the file ``fd`` from ``offset`` on without changing
    its size (Linux's ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``), so that appends into
    them cannot fail for want of space; False if the disk has no room (or the system
    no such call). The standard library's ``posix_fallocate`` would grow the file."""
    fallocate = _fallocate()
    return fallocate is not None and fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0


def _fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Staged:
    """A record's new text, written whole beside it and not yet in its place
    (``RecordDir.stage``)."""

    path: Path
    tmp: Path
    sync: bool

    def commit(self) -> None:
        """Put it in place: readers see the old record or this one. StoreError if the
        disk refuses (the earlier record stays, the temp file goes)."""
        with _refused(self.path):
            put_in_place(self.tmp, self.path, sync=self.sync)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def _refused(record: Path) -> Iterator[None]:
    """The disk's refusal to write ``record`` as a ``StoreError`` naming it (and logged)."""
    try:
        yield
    except OSError as error:
        failure = storage_failure(error, f"the store record {record.parent.name}/{record.name}")
        if failure is None:
            raise
        log.warning("%s", failure.message)
        raise failure from None


class RecordDir:
    """One folder of SXP records, each in a file named by its key. ``sync=False``: records
    that only have to outlive a xend process, not the host, are not fsynced."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, key: str, value: Value, *, sync: bool = True) -> None:
        """Store ``value`` under ``key``, replacing any earlier record atomically; a full
        or read-only disk raises ``StoreError`` and leaves the earlier record. ``sync``
        False: this record need not outlive the host, whatever the folder's."""
        self.stage(key, value, sync=sync).commit()

    def stage(self, key: str, value: Value, *, sync: bool = True) -> Staged:
        """``write`` in two steps: the record's new text is written whole now, beside the
        record, and put in its place by ``Staged.commit`` (a rename), or dropped by
        ``Staged.discard``. Until then readers, and a xend started after a kill, find the
        earlier record (the temp file is removed at the next ``load_all``). Errors as
        ``write``'s."""
        path = self._path(key)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sync = self.sync and sync
        with _refused(path):
            tmp = write_beside(path, f"# {path} {stamp}\n{pretty(value)}".encode(),
                               sync=sync)
        return Staged(path, tmp, sync)

    def read(self, key: str) -> Value | None:
        """The record under ``key``; None if there is none or it was corrupt."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            # The size limit guards against network input; a record is our own file.
            values = parse_all(data, max_size=len(data))
        except ParseError as exc:
            self._move_aside(key, str(exc))
            return None
        if len(values) != 1:
            self._move_aside(key, "empty record" if not values else "more than one value")
            return None
        return values[0]

    def delete(self, key: str, *, sync: bool = True) -> None:
        """Remove the record under ``key``, if there is one. A read-only store keeps it,
        which is only said: what deletes a record is ending something, and must end.
        ``sync`` False: a record back after the host crashed would do no harm."""
        try:
            self._path(key).unlink(missing_ok=True)
            if self.sync and sync:
                _fsync_dir(self.path)
        except OSError as error:
            failure = storage_failure(error, f"the store record {self.path.name}/{key}")
            if failure is None:
                raise
            log.warning("Cannot delete the store record %s/%s: %s", self.path.name, key,
                        error.strerror)

    def keys(self) -> list[str]:
        """The keys of all records, sorted; temp files and the corrupt folder are not keys."""
        return sorted(
            entry.name
            for entry in self.path.iterdir()
            if _KEY.fullmatch(entry.name) and entry.name != CORRUPT_DIR and entry.is_file()
        )

    def load_all(self) -> dict[str, Value]:
        """Every good record by key; removes temp files a crash left behind."""
        for entry in self.path.glob(f"{TMP_PREFIX}*"):
            entry.unlink(missing_ok=True)
        records = {}
        for key in self.keys():
            value = self.read(key)
            if value is not None:
                records[key] = value
        return records

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or key == CORRUPT_DIR:
            raise ValueError(f"invalid store key {key!r}")
        return self.path / key

    def _move_aside(self, key: str, reason: str) -> None:
        folder = self.path / CORRUPT_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        target = folder / f"{key}.{int(time.time())}"
        os.replace(self.path / key, target)
        _fsync_dir(self.path)
        log.warning("Corrupt store record moved to %s: %s", target, reason)


class Store:
    """The configuration store under ``dbroot``: domains, transfer sessions, vnets, API tokens."""

    def __init__(self, dbroot: Path) -> None:
        self.dbroot = dbroot
        dbroot.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.domain = RecordDir(dbroot / "domain")
        self.migrate = RecordDir(dbroot / "migrate")
        self.vnet = RecordDir(dbroot / "vnet")
        self.token = RecordDir(dbroot / "token")
        # Domains being made, not yet recorded: a xend killed half-way must find them; a
        # host that crashes takes the domains too, so these need no fsync.
        self.intent = RecordDir(dbroot / "intent", sync=False)


def host_boot_id(boot_id_file: Path = BOOT_ID_FILE) -> str:
    """A string that is the same for the whole life of this host boot, and only for it."""
    try:
        boot_id = boot_id_file.read_text().strip()
    except OSError:
        boot_id = ""
    if boot_id:
        return boot_id
    # The boot time is a weaker identity (it can shift by a second when the clock is
    # stepped), so it is only the fallback.
    for line in PROC_STAT.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "btime":
            return f"btime {value.strip()}"
    raise OSError(f"cannot tell this boot apart: no {boot_id_file} and no btime in {PROC_STAT}")


def detect_host_reboot(store: Store, runtime_dir: Path, boot_id_file: Path = BOOT_ID_FILE) -> bool:
    """True if the host rebooted since xend last ran; then the runtime state is dropped.

    Runtime state is everything inside ``runtime_dir`` and every transfer session in
    ``store.migrate``; the domain and vnet configuration is kept.
    """
    if store.dbroot.resolve().is_relative_to(runtime_dir.resolve()):
        raise ValueError(f"the store {store.dbroot} must not lie inside the run dir {runtime_dir}")
    current = host_boot_id(boot_id_file)
    lastboot = store.dbroot / LASTBOOT_FILE
    try:
        previous = lastboot.read_text().strip()
    except FileNotFoundError:
        previous = None
    rebooted = previous is not None and previous != current
    if rebooted:
        _empty_folder(runtime_dir)
        for key in store.migrate.keys():  # noqa: SIM118 - a RecordDir, not a dict
            store.migrate.delete(key)
        log.info("Host rebooted since xend last ran: runtime state in %s dropped", runtime_dir)
    # Recorded only after the clean-up, so a crash half-way repeats it on the next start;
    # and only when it changed, so a full disk does not stop xend from starting.
    if previous != current:
        try:
            atomic_write(lastboot, f"{current}\n".encode())
        except OSError as error:  # a first start on a full disk: start anyway
            log.warning("Cannot record this boot in %s (%s): a host reboot before it is "
                        "recorded will not be noticed", lastboot, error)
    return rebooted


def _empty_folder(folder: Path) -> None:
    """Remove everything inside ``folder``, following no symlink out of it."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
