"""A call on a thread of its own beside a transfer's main work (hashing a save file,
pumping a stream onto a connection); ``finish`` waits for it and raises what it raised."""

from __future__ import annotations

import threading
from collections.abc import Callable

from xend_actors.errors import Timeout


class Background:
    def __init__(self, call: Callable[[], None], name: str) -> None:
        self.error: BaseException | None = None
        self._call = call
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._call()
        except BaseException as error:
            self.error = error

    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the call to end; raise what it raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise Timeout(f"{self._thread.name} did not end within {timeout:g} s")
        if self.error is not None:
            raise self.error
