"""A console's scrollback: the last bytes of its output, numbered by byte offset.

Offsets count every byte the console has received since it was made, so a reader
asks for what came after the offset it last saw and learns whether it missed some
(the slice then starts later than asked). The bytes live in one ring buffer that
grows with the output up to ``limit`` and is then written round and round: a quiet
guest costs what it printed, and a flooding one costs copies into memory already
in use rather than fresh pages for every read (which halved the relay's speed).
"""

from __future__ import annotations

from dataclasses import dataclass

LIMIT = 1 << 20


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

    @property
    def start(self) -> int:
        """The offset of the oldest byte kept."""
        return max(0, self._end - self.limit)

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

    def read(self, since: int) -> LogSlice:
        """What is kept after offset ``since``."""
        first = min(max(since, self.start), self._end)
        size, at = self._end - first, first % self.limit
        head = self._ring[at:at + size]
        data = bytes(head) + bytes(self._ring[:size - len(head)])
        return LogSlice(data, first, self._end)
