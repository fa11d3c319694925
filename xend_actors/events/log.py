"""The event log: the last events in memory and in ``<dbroot>/events``, one
``(event (seq N) (time T) (name NAME) (value V))`` line per event, appended and fsynced,
and rewritten atomically to the last ``keep`` events when it has grown to twice that.

A log that cannot be written (a full or read-only disk) does not stop the events: they
are kept in memory as always, counted (``unwritten``), said once in xend's log, and
written with the next rewrite once the disk takes them again, which is said with the
count.
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
from xend_actors.store import atomic_write

log = logging.getLogger(__name__)

KEEP = 10_000  # events kept in the log, and in memory for ``since``
KEEP_BYTES = 8 << 20  # ... and at most this many bytes of them (injected events can be big)


class EventLog:
    """The last events in memory and, given a path, in an append-only file.

    Both hold at most ``keep`` events and ``keep_bytes`` of records (the newest event
    always stays). On opening, the file is read, unreadable lines are skipped, and it
    is rewritten, so that a line torn by a crash never has another glued to it; after
    a failed write the next append rewrites it for the same reason.
    """

    def __init__(self, path: Path | None = None, keep: int = KEEP,
                 keep_bytes: int = KEEP_BYTES) -> None:
        self.path = path
        self.keep = keep
        self.keep_bytes = keep_bytes
        self._events: deque[tuple[Event, bytes]] = deque()
        self._bytes = 0
        self._file: BinaryIO | None = None
        self._file_lines = self._file_bytes = 0
        self.unwritten = 0  # events kept in memory only, since a write failed
        if path is not None:
            self._load(path)
            try:
                self._rewrite(path)
            except OSError as error:  # a full disk must not stop xend from starting
                self._failed(error, 0)

    @property
    def last_seq(self) -> int:
        return self._events[-1][0].seq if self._events else 0

    def append(self, events: list[Event]) -> None:
        """Add ``events`` (numbered after ``last_seq``) and make them durable if the disk
        lets it; if not, they are kept in memory and counted in ``unwritten``."""
        lines = [(sxp.show(event.record()) + "\n").encode() for event in events]
        for event, line in zip(events, lines, strict=True):
            self._remember(event, line)
        if self.path is None:
            return
        try:
            if self._file is None:
                self._rewrite(self.path)
                if self.unwritten:
                    log.warning("Event log %s written again: %d events were written late",
                                self.path, self.unwritten)
                    self.unwritten = 0
                return
            data = b"".join(lines)
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file_lines += len(lines)
            self._file_bytes += len(data)
            if self._file_lines > 2 * self.keep or self._file_bytes > 2 * self.keep_bytes:
                self._rewrite(self.path)
        except OSError as error:
            self._failed(error, len(events))

    def since(self, seq: int, limit: int) -> list[Event]:
        """The first ``limit`` events numbered after ``seq`` that are still kept."""
        newer = []
        for event, _line in reversed(self._events):
            if event.seq <= seq:
                break
            newer.append(event)
        return newer[::-1][:limit]

    def _failed(self, error: OSError, count: int) -> None:
        """A write failed: said once, until a write works again; the next append
        rewrites the file, so a line torn here never has another glued to it."""
        self.close()
        if not self.unwritten:
            log.error("Cannot write the event log %s: %s; events are kept in memory and "
                      "written when it can be", self.path, error)
        self.unwritten += count

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # the bytes a failed write left in its buffer
                file.close()

    def _remember(self, event: Event, line: bytes) -> None:
        self._events.append((event, line))
        self._bytes += len(line)
        while len(self._events) > 1 and (
            len(self._events) > self.keep or self._bytes > self.keep_bytes
        ):
            self._bytes -= len(self._events.popleft()[1])

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        skipped = 0
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                event = Event.from_record(sxp.parse(line, max_size=len(line)))
            except (sxp.ParseError, ValueError):
                skipped += 1
                continue
            if event.seq <= self.last_seq:
                skipped += 1
                continue
            self._remember(event, line + b"\n")
        if skipped:
            log.warning("Event log %s: %d unreadable lines skipped", path, skipped)

    def _rewrite(self, path: Path) -> None:
        """Replace the file with the events kept, atomically, and append to it from now."""
        data = b"".join(line for _event, line in self._events)
        atomic_write(path, data)
        self.close()
        self._file = path.open("ab")
        self._file_lines, self._file_bytes = len(self._events), len(data)
