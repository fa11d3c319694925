"""The save image: one file holding a saved domain's info SXP and its hypervisor state.

The layout, all integers big-endian::

    magic       16 bytes  b"xend-actors-save"
    version     u32       FORMAT_VERSION (3)
    driver      12 bytes  the driver that wrote it, ASCII, NUL-padded: b"sim", b"qemu"
    check        8 bytes  the checksum's algorithm, ASCII, NUL-padded: b"crc32" (written),
                          b"sha256"
    info size   u32       bytes of the domain info SXP text
    meta size   u32       bytes of the driver's description of the machine (may be 0)
    payload     u64       bytes of the hypervisor's state
    checksum    32 bytes  the check's value over the info text, the meta and the payload,
                          in order: CRC-32 big-endian, then zeros; SHA-256 whole
    info        the domain info SXP (facts §4.5), its ``(config (vm ...))`` inside
    meta        what the driver needs before the state (qemu: the machine to launch)
    payload     the driver's state of the suspended domain (opaque to xend)

The file must be exactly that long. Only the header/vmconfig framing idea of Xen's
format carries over (facts §10.5): a payload is only good for the driver that made it,
so a file another driver wrote is refused by name. Version 2 files (no check field:
always SHA-256) and version 1 files (no driver or meta field either, always the sim's)
are still read; the checksum guards against truncation and corruption, not forgery
(``checksum``), so a save writes the cheaper CRC-32. Reading checks everything it can
before anything is created, so a truncated, corrupt or foreign file is refused with a
``BadRequest`` that says which; a state too big to hold in memory (a qemu guest's RAM)
is written and read by the hypervisor straight from the file (``Writer``, ``Reader``),
its checksum computed beside it from the page cache, and a restore whose checksum
fails at the end is undone.

Only a regular file is read, opened without following a symlink and without waiting
(a FIFO would block forever, a device never end): anything else is refused before a
byte is read, and no more than the header's sizes, checked against the file's, are
ever read. A save replaces no file but an earlier save file: not through a symlink,
not a device, not a file of another kind (``check_target``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xend_actors import sxp
from xend_actors.errors import BadRequest, Conflict, XendError
from xend_actors.store import atomic_write, create_new, storage_failure
from xend_actors.transfer.checksum import Check, Running

MAGIC = b"xend-actors-save"
FORMAT_VERSION = 3
HEADER = struct.Struct(">16sI12s8sIIQ32s")
HEADER_V2 = struct.Struct(">16sI12sIIQ32s")
HEADER_V1 = struct.Struct(">16sIIQ32s")
MAX_INFO = 1 << 20
MAX_META = 1 << 20
MAX_PAYLOAD = 256 << 20  # held in memory: the sim's state
MAX_STREAM = 1 << 40  # streamed: a qemu guest's memory
CHUNK = 1 << 20
CHECK = Check.CRC32  # what a save writes
SYNC_SECONDS = 0.02  # the disk writes the state as it lands, not all of it after


@dataclass(frozen=True)
class SaveImage:
    """What a save file holds: the domain info SXP and the hypervisor's state."""

    info: sxp.Value
    payload: bytes
    driver: str = "sim"
    meta: bytes = b""


@dataclass(frozen=True)
class Header:
    """A save file's header and info, read and checked; the payload follows at
    ``payload_offset``."""

    driver: str
    info: sxp.Value
    meta: bytes
    info_size: int
    payload_size: int
    payload_offset: int
    digest: bytes
    version: int
    check: Check


def encode(image: SaveImage) -> bytes:
    """The bytes of a save file holding ``image``."""
    info = _info_bytes(image.info)
    _check_meta(image.meta)
    if len(image.payload) > MAX_PAYLOAD:
        raise BadRequest(f"the domain state is {len(image.payload)} bytes; a save file "
                         f"holds at most {MAX_PAYLOAD}")
    digest = Running(CHECK, info + image.meta + image.payload).value()
    header = _pack(image.driver, len(info), len(image.meta), len(image.payload), digest)
    return header + info + image.meta + image.payload


def decode(data: bytes, name: str = "the save file", driver: str | None = None) -> SaveImage:
    """The image in ``data``; BadRequest naming ``name`` if it is not a whole, good one
    (or, given ``driver``, one another driver wrote)."""
    raw = _raw_header(data, len(data), name, driver, MAX_PAYLOAD)
    if len(data) > raw.end:
        raise BadRequest(f"{name} has {len(data) - raw.end} bytes of trailing garbage")
    if Running(raw.check, data[raw.offset:]).value() != raw.digest:
        raise _corrupt(name, raw.check)
    header = _header(raw, data, name)
    return SaveImage(header.info, data[header.payload_offset:], header.driver, header.meta)


def parse_header(data: bytes, file_size: int, name: str, driver: str | None,
                 max_payload: int) -> Header:
    """The header, info and meta at the start of ``data`` (a file of ``file_size``
    bytes); BadRequest if they are not good. The checksum is not checked here."""
    return _header(_raw_header(data, file_size, name, driver, max_payload), data, name)


@dataclass(frozen=True)
class _Raw:
    driver: str
    version: int
    offset: int  # where the info starts
    info_size: int
    meta_size: int
    payload_size: int
    digest: bytes
    check: Check

    @property
    def end(self) -> int:
        return self.offset + self.info_size + self.meta_size + self.payload_size


def _raw_header(data: bytes, file_size: int, name: str, driver: str | None,
                max_payload: int) -> _Raw:
    if len(data) < HEADER_V1.size or not data.startswith(MAGIC):
        if MAGIC.startswith(data[:len(MAGIC)]) and len(data) < HEADER_V1.size:
            raise BadRequest(f"{name} is truncated: {len(data)} bytes, less than a header")
        raise BadRequest(f"{name} is not a xend-actors save file (bad magic)")
    (version,) = struct.unpack_from(">I", data, len(MAGIC))
    layout = {1: HEADER_V1, 2: HEADER_V2, FORMAT_VERSION: HEADER}.get(version)
    if layout is None:
        raise BadRequest(f"{name} has save format version {version}; this xend reads "
                         f"versions 1 to {FORMAT_VERSION}")
    if len(data) < layout.size:
        raise BadRequest(f"{name} is truncated: {len(data)} bytes, less than a header")
    check = Check.SHA256
    if version == 1:
        _magic, _v, info_size, payload_size, digest = HEADER_V1.unpack_from(data)
        raw, meta_size = b"sim", 0
    elif version == 2:
        _magic, _v, raw, info_size, meta_size, payload_size, digest = \
            HEADER_V2.unpack_from(data)
    else:
        _magic, _v, raw, named, info_size, meta_size, payload_size, digest = \
            HEADER.unpack_from(data)
        check = _named_check(named, name)
    kind, offset = raw.rstrip(b"\0").decode("ascii", "replace"), layout.size
    if driver is not None and kind != driver:
        raise BadRequest(f"{name} was saved by the {kind} hypervisor driver; this xend runs "
                         f"the {driver} driver, which cannot restore it")
    if info_size > MAX_INFO or meta_size > MAX_META or payload_size > max_payload:
        raise BadRequest(f"{name} claims sizes beyond the limits ({info_size} bytes of "
                         f"info, {meta_size} of meta, {payload_size} of state)")
    result = _Raw(kind, version, offset, info_size, meta_size, payload_size, digest, check)
    if file_size < result.end:
        raise BadRequest(f"{name} is truncated: {file_size} bytes of {result.end}")
    if len(data) < offset + info_size + meta_size:
        raise BadRequest(f"{name} is truncated: {len(data)} bytes, less than its info")
    return result


def _named_check(raw: bytes, name: str) -> Check:
    check = Check.named(raw)
    if check is None:
        shown = raw.rstrip(b"\0").decode("ascii", "replace")
        raise BadRequest(f"{name} names a checksum this xend does not know: {shown!r}")
    return check


def _header(raw: _Raw, data: bytes, name: str) -> Header:
    body = data[raw.offset:raw.offset + raw.info_size]
    try:
        info = sxp.parse(body, max_size=raw.info_size)
    except (sxp.ParseError, UnicodeDecodeError) as error:
        raise BadRequest(f"{name} holds domain info that does not parse: {error}") from None
    if sxp.name(info) != "domain":
        raise BadRequest(f"{name} holds no (domain ...) info")
    meta_at = raw.offset + raw.info_size
    return Header(raw.driver, info, bytes(data[meta_at:meta_at + raw.meta_size]),
                  raw.info_size, raw.payload_size, meta_at + raw.meta_size, raw.digest,
                  raw.version, raw.check)


def check_target(path: Path) -> None:
    """Refuse a path a save file cannot be written to, before anything is touched: not
    absolute, in no directory, or already something other than a save file (a symlink,
    a directory, a device, a file of another kind), which a save must not replace."""
    if not path.is_absolute():
        raise BadRequest(f"the save file must be an absolute path, got {path}")
    if not path.parent.is_dir():
        raise BadRequest(f"cannot save to {path}: {path.parent} is not a directory")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as error:
        raise BadRequest(f"cannot save to {path}: {_refusal(path, error)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BadRequest(f"cannot save to {path}: it is {_kind(mode)}")
        if os.pread(fd, len(MAGIC), 0) not in (MAGIC, b""):
            raise Conflict(f"cannot save to {path}: it exists and is not a xend save "
                           "file; remove it or choose another file")
    except OSError as error:
        raise BadRequest(f"cannot save to {path}: {error.strerror or error}") from None
    finally:
        os.close(fd)


def _cannot_write(path: Path, error: OSError) -> XendError:
    """A failed write of a save file: 507 when the disk is full, as for the store."""
    return storage_failure(error, str(path)) or XendError(
        f"cannot write {path}: {error.strerror or error}")


def write(path: Path, image: SaveImage, partial: Path | None = None) -> None:
    """Write ``image`` to ``path`` atomically: complete and fsynced, or not there at all.
    It goes through a temp file beside it: ``partial`` if given (``store.partial_path``),
    which must not exist."""
    check_target(path)
    try:
        atomic_write(path, encode(image), tmp=partial)
    except OSError as error:
        raise _cannot_write(path, error) from None


def read(path: Path, driver: str | None = None) -> SaveImage:
    """The image in the file at ``path``; BadRequest if unreadable or not a good one (or,
    given ``driver``, one another driver wrote)."""
    with _open_source(path) as file:
        try:
            size = os.fstat(file.fileno()).st_size
            head = file.read(HEADER.size + MAX_INFO + MAX_META)
            # Says why a file is too big: a payload beyond the limit, or trailing bytes.
            raw = _raw_header(head, size, str(path), driver, MAX_PAYLOAD)
            data = head + file.read(max(0, raw.end + 1 - len(head)))
        except OSError as error:
            raise BadRequest(f"cannot read {path}: {error.strerror or error}") from None
    return decode(data, str(path), driver)


class Reader:
    """A save file opened for a streamed restore: its header checked at once; its payload
    left to whoever reads ``fileno()`` from its offset, while ``finish`` checks the
    checksum from the page cache (``pread``, so the shared file offset is not moved)."""

    def __init__(self, path: Path, driver: str) -> None:
        self.path = path
        self._file = _open_source(path)
        try:
            size = os.fstat(self._file.fileno()).st_size
            head = self._file.read(HEADER.size + MAX_INFO + MAX_META)
            self.header = parse_header(head, size, str(path), driver, MAX_STREAM)
            extra = size - self.header.payload_offset - self.header.payload_size
            if extra > 0:
                raise BadRequest(f"{path} has {extra} bytes of trailing garbage")
            start = self.header.payload_offset - self.header.info_size - len(self.header.meta)
            self._digest = Running(self.header.check, head[start:self.header.payload_offset])
        except BaseException:
            self._file.close()
            raise

    def fileno(self) -> int:
        """The open file, its offset at the payload (set here: the buffered reader's
        own position says nothing of the descriptor's)."""
        os.lseek(self._file.fileno(), self.header.payload_offset, os.SEEK_SET)
        return self._file.fileno()

    def finish(self) -> None:
        """Check the payload, then BadRequest unless the checksum matches."""
        at, end = self.header.payload_offset, self.header.payload_offset + self.header.payload_size
        # One buffer read into again and again: a fresh megabyte for each read would be
        # mapped and faulted in anew, a tenth more CPU beside the qemu loading the file.
        buffer = memoryview(bytearray(CHUNK))
        while at < end:
            size = os.preadv(self._file.fileno(), [buffer[:min(CHUNK, end - at)]], at)
            if not size:
                raise BadRequest(f"{self.path} is truncated: it shrank while being read")
            self._digest.update(buffer[:size])
            at += size
        if self._digest.value() != self.header.digest:
            raise _corrupt(str(self.path), self.header.check)

    def close(self) -> None:
        self._file.close()


class Writer:
    """A save file written as a stream: a temp file beside ``path`` (``partial``, made
    here: ``store.partial_path``) that becomes ``path`` only once it is complete and
    fsynced (``commit``), or is removed (``abort``). The payload is written to
    ``fileno()`` from its offset (by another process, even) while ``follow`` checksums
    what has landed, from the page cache, and ``sync_until`` sends it to the disk."""

    def __init__(self, path: Path, info: sxp.Value, driver: str, meta: bytes,
                 partial: Path) -> None:
        check_target(path)
        self.path = path
        self._info = _info_bytes(info)
        self._meta = meta
        self._driver = driver
        _check_meta(meta)
        try:
            fd = create_new(partial)
        except OSError as error:
            raise _cannot_write(path, error) from None
        self._tmp = partial
        self._file = os.fdopen(fd, "w+b", buffering=0)
        self._digest = Running(CHECK, self._info + meta)
        self._start = HEADER.size + len(self._info) + len(meta)
        self._checked = self._start
        try:
            self._file.write(bytes(HEADER.size) + self._info + meta)
        except OSError as error:
            self.abort()
            raise _cannot_write(path, error) from None

    def fileno(self) -> int:
        """The temp file, its offset where the payload goes."""
        return self._file.fileno()

    def follow(self, done: threading.Event, timeout: float) -> None:
        """Checksum the payload as it lands, until ``done`` is set and all of it is;
        XendError if nothing lands for ``timeout`` seconds before that."""
        fd = self._file.fileno()
        idle_since = time.monotonic()
        while True:
            finished = done.is_set()  # before the read: what was written by then is seen
            data = os.pread(fd, CHUNK, self._checked)
            if data:
                self._digest.update(data)
                self._checked += len(data)
                idle_since = time.monotonic()
            elif finished:
                return
            elif time.monotonic() - idle_since > timeout:
                raise XendError(f"nothing was written to {self.path} for {timeout:g} s")
            else:
                done.wait(0.002)  # caught up with the writer: let it get ahead

    def sync_until(self, done: threading.Event) -> None:
        """Send what has landed on its way to the disk while more is written, and once
        ``done`` is set all of it, beside ``follow``'s checking of the last part:
        ``commit``'s own fsync is then left the header."""
        try:
            while not done.wait(SYNC_SECONDS):
                os.fdatasync(self._file.fileno())
            os.fdatasync(self._file.fileno())
        except OSError as error:
            raise _cannot_write(self.path, error) from None

    def commit(self) -> None:
        """The header in place, the file fsynced and renamed to ``path``."""
        size = os.fstat(self._file.fileno()).st_size
        if size != self._checked:
            self.abort()
            raise XendError(f"cannot write {self.path}: {size - self._checked} bytes were "
                            "written after the state ended")
        header = _pack(self._driver, len(self._info), len(self._meta), size - self._start,
                       self._digest.value())
        try:
            os.pwrite(self._file.fileno(), header, 0)
            # the size and blocks went with the payload: only the header's block is left
            os.fdatasync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            self.abort()
            raise _cannot_write(self.path, error) from None

    def abort(self) -> None:
        """Leave no file behind."""
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def _pack(driver: str, info_size: int, meta_size: int, payload_size: int,
          digest: bytes) -> bytes:
    return HEADER.pack(MAGIC, FORMAT_VERSION, _driver_bytes(driver), CHECK.value.encode(),
                       info_size, meta_size, payload_size, digest)


def _corrupt(name: str, check: Check) -> BadRequest:
    return BadRequest(f"{name} is corrupt: its {check.title} checksum does not match")


def _open_source(path: Path) -> BinaryIO:
    """The save file at ``path``, open for reading, if it is a regular file reached
    without a symlink; else a BadRequest saying what it is. A FIFO is opened without
    waiting for a writer, then refused."""
    if not path.is_absolute():
        raise BadRequest(f"the save file must be an absolute path, got {path}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise BadRequest(f"cannot read {path}: {_refusal(path, error)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BadRequest(f"cannot read {path}: it is {_kind(mode)}, "
                             "not a save file")
        os.set_blocking(fd, True)  # the hypervisor reads it too
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _refusal(path: Path, error: OSError) -> str:
    """Why ``path`` could not be opened, in words: a symlink and a socket say so."""
    if error.errno == errno.ELOOP and path.is_symlink():
        return "it is a symbolic link; give the path of the file itself"
    if error.errno == errno.ENXIO:
        return "it is a socket"
    return str(error.strerror or error)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _info_bytes(info: sxp.Value) -> bytes:
    data = sxp.show(info).encode()
    if len(data) > MAX_INFO:
        raise BadRequest(f"the domain info is {len(data)} bytes; a save file holds "
                         f"at most {MAX_INFO}")
    return data


def _check_meta(meta: bytes) -> None:
    if len(meta) > MAX_META:
        raise BadRequest(f"the driver's meta is {len(meta)} bytes; a save file holds "
                         f"at most {MAX_META}")


def _driver_bytes(driver: str) -> bytes:
    raw = driver.encode("ascii")
    if not raw or len(raw) > 12:
        raise ValueError(f"a driver name is 1 to 12 ASCII characters, got {driver!r}")
    return raw
