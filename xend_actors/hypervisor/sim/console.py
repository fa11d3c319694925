"""A simulated domain's console channel: raw bytes both ways, one client at a time.

Guest output goes to the attached client (the sink); while nobody is attached the
last ``BUFFER_LIMIT`` bytes are kept and delivered when a client attaches (facts §8).
A sink that cannot take more says so (``ready``) and calls ``sink_ready`` when it
can again, so a guest writing as fast as the channel takes (``flood``) waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

BUFFER_LIMIT = 64 * 1024


class ConsoleSink(Protocol):
    """Where console output goes: in xend-simhv, a client's connection."""

    def write(self, data: bytes) -> None: ...

    def ready(self) -> bool:
        """Whether it takes more output now."""
        ...

    def close(self) -> None: ...


class Console:
    def __init__(self, on_input: Callable[[bytes], None]) -> None:
        self._on_input = on_input
        self._sink: ConsoleSink | None = None
        self._buffer = bytearray()
        self._waiting: list[Callable[[], None]] = []
        self._closed = False

    # --- the guest's side ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if self._sink is not None:
            self._sink.write(data)
            return
        self._buffer += data
        if len(self._buffer) > BUFFER_LIMIT:
            del self._buffer[:-BUFFER_LIMIT]

    def ready(self) -> bool:
        """Whether output is taken now; a detached console always takes it (into its buffer)."""
        return self._sink is None or self._sink.ready()

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the console takes output again."""
        if self.ready():
            callback()
        else:
            self._waiting.append(callback)

    # --- the client's side -----------------------------------------------------------

    def attach(self, sink: ConsoleSink) -> None:
        """Make ``sink`` the client, closing any previous one, and flush the buffer to it."""
        if self._closed:
            sink.close()
            return
        previous, self._sink = self._sink, sink
        if previous is not None:
            previous.close()
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            sink.write(data)
        self.sink_ready()

    def detach(self, sink: ConsoleSink) -> None:
        """``sink`` went away; output is buffered again (unless another client replaced it)."""
        if self._sink is sink:
            self._sink = None
            self.sink_ready()

    def sink_ready(self) -> None:
        """The client takes output again: wake whoever waits for it."""
        while self._waiting and self.ready():
            self._waiting.pop(0)()

    def type(self, data: bytes) -> None:
        """Bytes the client typed, for the guest."""
        if not self._closed:
            self._on_input(data)

    def close(self) -> None:
        """The domain is gone: drop the client and the buffer."""
        self._closed = True
        self._waiting.clear()
        self._buffer.clear()
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()
