"""The event log: the last events in memory and in ``<dbroot>/events``, one
``(event (seq N) (time T) (name NAME) (value V))`` line per event, appended and fsynced,
and rewritten atomically to the last ``keep`` events when it has grown to twice that.

A full disk does not lose events: the file keeps ``reserve`` bytes allocated past its
end (``store.reserve``), into which appends go when the disk has no room left, so the
events of a full time are durable as any others, up to a few thousand of them. Past
that (or on a read-only disk) the events are kept in memory as always, counted
(``unwritten``), said once in xend's log, and written as soon as the disk takes them
again, which is said with the count. A failed append is cut off the file at once, so
a torn line never has another glued to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from pathlib import Path
from typing import BinaryIO

from xend_actors import sxp
from xend_actors.events.event import Event
from xend_actors.store import atomic_write, reserve

log = logging.getLogger(__name__)

KEEP = 10_000  # events kept in the log, and in memory for ``since``
KEEP_BYTES = 8 << 20  # ... and at most this many bytes of them (injected events can be big)
RESERVE = 256 << 10  # bytes allocated ahead of the appends: ~1500 events on a full disk


class EventLog:
    """The last events in memory and, given a path, in an append-only file.

    Both hold at most ``keep`` events and ``keep_bytes`` of records (the newest event
    always stays). On opening, the file is read and unreadable lines are skipped; a
    last line torn by a crash is cut off (which takes no space), so that no line is
    ever glued to it.
    """

    def __init__(self, path: Path | None = None, keep: int = KEEP,
                 keep_bytes: int = KEEP_BYTES, reserve: int = RESERVE) -> None:
        self.path = path
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.reserve = reserve
        # Each kept as its number and its line, parsed again when asked for: an Event with
        # its parsed value takes five times the memory, 13 MiB for a full window.
        self._events: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._file: BinaryIO | None = None
        self._file_lines = self._file_bytes = 0
        self._reserved_to = 0  # the file's space is allocated up to here
        self._durable = 0  # the number of the last event in the file
        self._compact_lines, self._compact_bytes = 2 * keep, 2 * keep_bytes
        self.unwritten = 0  # events kept in memory only, since a write failed
        if path is not None:
            try:
                self._open(path)
            except OSError as error:  # a full disk must not stop xend from starting
                self._failed(error, 0)

    @property
    def last_seq(self) -> int:
        return self._events[-1][0] if self._events else 0

    def append(self, events: list[Event], shown: list[str] | None = None) -> None:
        """Add ``events`` (numbered after ``last_seq``; ``shown``: their records already
        shown, as ``Event.record_shown``) and make them durable if the disk lets it; if
        not, they are kept in memory and counted in ``unwritten``."""
        if shown is None:
            shown = [sxp.show(event.record()) for event in events]
        for event, line in zip(events, shown, strict=True):
            self._remember(event, (line + "\n").encode())
        if self.path is None:
            return
        try:
            if self._file is None:
                self._rewrite(self.path)
            else:
                self._append_pending(self._file)
        except OSError as error:
            self._failed(error, len(events))
            return
        if self.unwritten:
            log.warning("Event log %s written again: %d events were written late",
                        self.path, self.unwritten)
            self.unwritten = 0
        if self._file_lines > self._compact_lines or self._file_bytes > self._compact_bytes:
            self._compact(self.path)

    def _append_pending(self, file: BinaryIO) -> None:
        """Append every event kept that the file lacks (those a failure held back too)."""
        pending = self._pending()
        data = b"".join(pending)
        try:
            rest = memoryview(data)
            while rest:  # unbuffered: nothing of a failed write is left to go out later
                rest = rest[os.write(file.fileno(), rest):]
            os.fsync(file.fileno())
        except OSError:
            # What got through is cut off, so the next append starts on a line of its own.
            os.ftruncate(file.fileno(), self._file_bytes)
            raise
        self._durable = self.last_seq
        self._file_lines += len(pending)
        self._file_bytes += len(data)
        self._reserve_ahead(file)

    def _pending(self) -> list[bytes]:
        """The lines of the events past ``_durable``, oldest first: taken from the newest
        end, so an append costs the same however many events are kept."""
        pending = []
        for seq, line in reversed(self._events):
            if seq <= self._durable:
                break
            pending.append(line)
        pending.reverse()
        return pending

    def _reserve_ahead(self, file: BinaryIO) -> None:
        if self._reserved_to - self._file_bytes < self.reserve // 2 and \
                reserve(file.fileno(), self._file_bytes, self.reserve):
            self._reserved_to = self._file_bytes + self.reserve

    def _compact(self, path: Path) -> None:
        """Rewrite the file to the events kept; on a full disk the file grows on, and
        this is tried again after another tenth of ``keep``."""
        try:
            self._rewrite(path)
        except OSError as error:  # the old file stays open, whole
            log.warning("Cannot compact the event log %s: %s", path, error)
            self._compact_lines = self._file_lines + max(1, self.keep // 10)
            self._compact_bytes = self._file_bytes + max(1, self.keep_bytes // 10)

    def since(self, seq: int, limit: int) -> list[Event]:
        """The first ``limit`` events numbered after ``seq`` that are still kept."""
        newer = []
        for number, line in reversed(self._events):
            if number <= seq:
                break
            newer.append(line)
        return [_event_of(line) for line in newer[::-1][:limit]]

    def _failed(self, error: OSError, count: int) -> None:
        """A write failed: said once, until a write works again. The file, cut back to
        its last whole line, takes the events held back with the next append; a file
        that could not be opened or cut back is rewritten whole by it."""
        if self._file is not None and os.fstat(self._file.fileno()).st_size != self._file_bytes:
            self.close()
        if not self.unwritten:
            log.error("Cannot write the event log %s: %s; events are kept in memory and "
                      "written when it can be", self.path, error)
        self.unwritten += count

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()

    def _remember(self, event: Event, line: bytes) -> None:
        self._events.append((event.seq, line))
        self._bytes += len(line)
        while len(self._events) > 1 and (
            len(self._events) > self.keep or self._bytes > self.keep_bytes
        ):
            self._bytes -= len(self._events.popleft()[1])

    def _open(self, path: Path) -> None:
        """Read the file's events, cut off a torn last line, and append from its end; a
        missing file is made."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._rewrite(path)
            return
        whole = data[:data.rfind(b"\n") + 1]
        skipped = self._load(path, whole)
        if len(whole) != len(data):
            os.truncate(path, len(whole))
        self._file = path.open("ab", buffering=0)
        self._file_lines, self._file_bytes = whole.count(b"\n"), len(whole)
        self._durable = self.last_seq
        self._reserve_ahead(self._file)
        if skipped:
            self._compact(path)  # so they are said once

    def _load(self, path: Path, data: bytes) -> int:
        """Keep the events of the lines in ``data``; the number of lines skipped."""
        skipped = 0
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                event = _event_of(line)
            except (sxp.ParseError, ValueError):
                skipped += 1
                continue
            if event.seq <= self.last_seq:
                skipped += 1
                continue
            self._remember(event, line + b"\n")
        if skipped:
            log.warning("Event log %s: %d unreadable lines skipped", path, skipped)
        return skipped

    def _rewrite(self, path: Path) -> None:
        """Replace the file with the events kept, atomically, and append to it from now."""
        data = b"".join(line for _seq, line in self._events)
        atomic_write(path, data)
        self.close()
        self._file = path.open("ab", buffering=0)
        self._file_lines, self._file_bytes = len(self._events), len(data)
        self._durable = self.last_seq
        self._reserved_to = 0
        self._reserve_ahead(self._file)
        self._compact_lines, self._compact_bytes = 2 * self.keep, 2 * self.keep_bytes


def _event_of(line: bytes) -> Event:
    """The event of a logged line; ParseError or ValueError if it is not one. Its value
    was bounded when it was first parsed or made; the record adds two levels around it."""
    return Event.from_record(sxp.parse(line, max_size=len(line), max_depth=sxp.MAX_DEPTH + 2))
