"""The xfr decoder: bytes in, as they arrive, messages and raw bytes out; no I/O.

Whoever owns the connection ``feed``s the decoder what it read, in pieces of any size,
and asks ``next`` for each whole message. A message that announces raw bytes (pages, a
state, a piece of a stream: ``messages.raw_size``) leaves them ``owed``: they are taken
(``take``), or moved past the decoder by the caller itself (``skip``, for a splice
straight from the socket), before the next message is read. So the decoder alone knows
where a message ends and raw bytes begin; a message is bounded by ``MAX_MESSAGE`` bytes
and raw bytes by what a message may announce (``MAX_BATCH`` pages, ``MAX_STATE``,
``MAX_DATA``).
"""

from __future__ import annotations

from xend_actors import sxp
from xend_actors.transfer.xfr.messages import MAX_MESSAGE, Message, from_sxp, raw_size


class Decoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._parser = sxp.Parser(max_size=MAX_MESSAGE)  # one per message: each bounded
        self.owed = 0  # raw bytes the last message announced that are not taken yet

    @property
    def buffered(self) -> int:
        """Bytes fed that neither a message nor a take has had yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the peer, next after those fed before."""
        self._buffer += data

    def next(self) -> Message | None:
        """The next whole message fed, else None: feed more. ``sxp.ParseError`` if the
        bytes are no SXP or the message passes ``MAX_MESSAGE``; ``XfrError`` (EPROTO) if
        it is no good xfr message."""
        if self.owed:
            raise RuntimeError(f"{self.owed} raw bytes are owed before the next message")
        while self._buffer:
            # A message is a list, so it can only end at a ")": feeding the parser up to
            # the next one leaves the bytes after the message in the buffer.
            end = self._buffer.find(b")") + 1 or len(self._buffer)
            self._parser.input(bytes(self._buffer[:end]))
            del self._buffer[:end]
            if self._parser.ready():
                value = self._parser.get_val()
                self._parser = sxp.Parser(max_size=MAX_MESSAGE)
                message = from_sxp(value)
                self.owed = raw_size(message)
                return message
        return None

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` of the raw bytes owed, from those fed: fewer, or none, when
        fewer were fed (feed more)."""
        size = min(limit, self.owed, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.owed -= size
        return data

    def skip(self, size: int) -> None:
        """``size`` owed raw bytes went past the decoder: the caller moved them from the
        connection itself. Only once the raw bytes fed are taken, so none comes twice."""
        if self._buffer or size > self.owed:
            raise RuntimeError(f"cannot skip {size} raw bytes: {self.owed} are owed, "
                               f"{len(self._buffer)} fed are not taken")
        self.owed -= size
