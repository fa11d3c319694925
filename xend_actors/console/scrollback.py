"""A console's scrollback: the last bytes of its output, numbered by byte offset, and
its copy in the run dir that outlives xend (``ScrollbackFile``).

Offsets count every byte the console has received since it was made, so a reader
asks for what came after the offset it last saw and learns whether it missed some
(the slice then starts later than asked). The bytes live in one ring buffer that
grows with the output up to ``limit`` and is then written round and round: a quiet
guest costs what it printed, and a flooding one costs copies into memory already
in use rather than fresh pages for every read (which halved the relay's speed).

The copy on disk is a ring too, so it is bounded: a header (offsets) and ``limit +
SLACK`` bytes where the byte at offset o is at o % (limit + SLACK). It is written
in place, never replaced (a MiB per flush would cost more than the relay), and
stays consistent without that: each write puts at most ``SLACK`` bytes in the
ring before the header says they are there, so a xend killed between the two only
ever overwrote bytes older than the ``limit`` the header keeps. The relay writes it
in batches (``relay.py``), so a flooding guest costs one write of the last
``limit`` bytes per batch, whatever it printed in between.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

LIMIT = 1 << 20
SLACK = 64 * 1024  # the most one write puts in the file's ring before its header
MAGIC = b"xend-scrollback1"
HEADER = struct.Struct("<16sqqqq")  # magic, domain id, limit, first offset kept, end offset
DATA = 4096  # where the ring starts in the file


@dataclass(frozen=True)
class LogSlice:
    """Bytes of a console's output: ``data`` starts at offset ``first``; ``next`` follows it."""

    data: bytes
    first: int
    next: int


class Scrollback:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._ring = bytearray()  # the byte at offset o is at o % limit
        self._end = 0  # offset after the newest byte
        self._first = 0  # no byte before this one is known (an earlier life kept less)

    @property
    def start(self) -> int:
        """The offset of the oldest byte kept."""
        return max(self._first, self._end - self.limit)

    @property
    def end(self) -> int:
        return self._end

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        if len(view) > self.limit:  # only its last bytes can be kept
            self._end += len(view) - self.limit
            view = view[-self.limit:]
        ring = self._ring
        if len(ring) < self.limit:
            if self._end + len(view) <= self.limit:  # still growing: offsets are positions
                ring += view
                self._end += len(view)
                return
            ring.extend(bytes(self.limit - len(ring)))
        at = self._end % self.limit
        first = min(len(view), self.limit - at)
        ring[at:at + first] = view[:first]
        ring[:len(view) - first] = view[first:]
        self._end += len(view)

    def resume(self, kept: LogSlice) -> None:
        """Go on from an earlier life's scrollback (this one is new): its offsets go on."""
        data = kept.data[-self.limit:]
        end = kept.next
        if end <= self.limit and len(data) == end:  # still growing: offsets are positions
            self._ring, self._end = bytearray(data), end
        else:
            self._ring, self._end = bytearray(self.limit), end - len(data)
            self.append(data)
        self._first = end - len(data)

    def read(self, since: int) -> LogSlice:
        """What is kept after offset ``since``."""
        first = min(max(since, self.start), self._end)
        size, at = self._end - first, first % self.limit
        head = self._ring[at:at + size]
        data = bytes(head) + bytes(self._ring[:size - len(head)])
        return LogSlice(data, first, self._end)


class ScrollbackFile:
    """The copy of one console's scrollback in ``folder``: ``<port>.log``, mode 0600.

    ``open`` finds what an earlier xend kept for the same console (same port, same
    domain id: a file of another domain is started afresh), ``write`` adds what the
    scrollback got since, ``remove`` deletes it when the console's domain is gone for
    good. OSError from any of them is for the caller to report; the console works on
    without its copy.

    The file is open only while it is read or written: a domain's console would
    otherwise hold one of xend's open files for good, half of what a sim domain takes
    (10,000 domains met the usual limit of 20,000). Each write opens it again without
    following a symlink and checks it is the same file (device and inode) it made.
    """

    def __init__(self, fd: int, path: Path, domid: int, limit: int, first: int,
                 end: int) -> None:
        self._fd = fd  # open only inside ``open`` and ``write``
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino)
        self.path = path
        self._domid = domid
        self._limit = limit
        self._first = first
        self.end = end  # the offset up to which the file holds the output

    @classmethod
    def open(cls, folder: Path, port: int, domid: int,
             limit: int = LIMIT) -> tuple[ScrollbackFile, LogSlice]:
        """The console's file, and what it kept (nothing if it is new)."""
        path = folder / f"{port}.log"
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            fd = -1
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            path.unlink()  # a symlink in xend's own folder: never followed, never kept
            fd = -1
        if fd >= 0:
            kept = _read_kept(fd, domid, limit)
            if kept is not None:
                found = cls(fd, path, domid, limit, kept.first, kept.next)
                found.close()
                return found, kept
            os.close(fd)
            path.unlink()  # another domain's, or not xend's format: start afresh
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        made = cls(fd, path, domid, limit, 0, 0)
        try:
            made._write_header()
        except OSError:
            made.remove()
            raise
        made.close()
        return made, LogSlice(b"", 0, 0)

    def write(self, scrollback: Scrollback) -> None:
        """Add what ``scrollback`` got after the file's end."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(self._fd)
            if (st.st_dev, st.st_ino) != self._identity:
                raise OSError(errno.ESTALE, "not the scrollback file xend made", str(self.path))
            self._write(scrollback)
        finally:
            self.close()

    def _write(self, scrollback: Scrollback) -> None:
        part = scrollback.read(self.end)
        if part.first > self.end:  # more than the ring came in between: the rest is lost
            self._first, self.end = part.first, part.first
            self._write_header()  # the bytes kept so far are no more, before any is overwritten
        size = self._limit + SLACK
        data = memoryview(part.data)
        while data:
            chunk, data = data[:SLACK], data[SLACK:]
            at = self.end % size
            head = chunk[:size - at]
            os.pwrite(self._fd, head, DATA + at)
            if len(head) < len(chunk):
                os.pwrite(self._fd, chunk[len(head):], DATA)
            self.end += len(chunk)
            self._first = max(self._first, self.end - self._limit)
            self._write_header()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _write_header(self) -> None:
        os.pwrite(self._fd, HEADER.pack(MAGIC, self._domid, self._limit, self._first,
                                        self.end), 0)


def _read_kept(fd: int, domid: int, limit: int) -> LogSlice | None:
    """What the file ``fd`` keeps for domain ``domid``; None if it is not such a file."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return None
    head = os.pread(fd, HEADER.size, 0)
    if len(head) != HEADER.size:
        return None
    magic, owner, kept_limit, first, end = HEADER.unpack(head)
    if magic != MAGIC or owner != domid or kept_limit != limit or not 0 <= first <= end:
        return None
    first = max(first, end - limit)
    size = limit + SLACK
    at, count = first % size, end - first
    data = os.pread(fd, min(count, size - at), DATA + at)
    if len(data) < count:
        data += os.pread(fd, count - len(data), DATA)
    if len(data) != count:  # shorter than its header says: not a file xend wrote whole
        return None
    return LogSlice(data, first, end)
