"""One xend that the tests of a module take turns on, and the ``Reaper`` that tears
xends down on threads of their own while the next tests run (see conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from tests.support.home import XendHome, leftover_processes, new_home
from tests.support.xend import Xend

# --- a xend that the tests of a module take turns on -----------------------------------------


class Reaper:
    """Tears down homes on threads of its own, so a test's teardown does not wait for its
    xend to stop; ``close`` waits for all and fails if any teardown did."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="reaper")
        self._jobs: list[tuple[str, Future[None]]] = []

    def submit(self, what: str, job: Callable[[], None]) -> None:
        self._jobs.append((what, self._pool.submit(job)))

    def close(self) -> None:
        """Wait for every teardown; fail if one failed or left a process behind (which is
        killed: the suite leaves the machine as it found it)."""
        self._pool.shutdown(wait=True)
        failed = [f"{what}: {future.exception()!r}" for what, future in self._jobs
                  if future.exception() is not None]
        left = leftover_processes()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not failed, "tearing down: " + "; ".join(failed)
        assert not left, f"processes left behind by the tests (killed now): {left}"


class SharedXend:
    """One xend that the tests of a module take turns on.

    ``take`` gives a test the xend alive (a new one if a test killed it or left it
    broken), its events marked at the test's beginning; ``give_back`` destroys every
    domain the test left, waiting for their last events, so the next test finds the
    xend as the module's first did: Domain-0 and nothing else.
    """

    def __init__(self, reaper: Reaper, extra: str = "",
                 make: Callable[[XendHome], Xend] = Xend) -> None:
        self.reaper = reaper
        self.extra = extra
        self.make = make
        self.current: Xend | None = None
        self.started = 0

    def take(self) -> Xend:
        xend = self.current
        if xend is None or not xend.home.alive():
            if xend is not None:
                self._discard(xend)
            home = new_home(self.extra)
            home.start()
            self.started += 1
            xend = self.current = self.make(home)
        else:
            xend.reconnect()
        xend.events.mark()
        return xend

    def give_back(self) -> None:
        xend = self.current
        if xend is None:
            return
        try:
            if not xend.home.alive():
                raise AssertionError("xend died")
            xend.destroy_all_but({"Domain-0"})
        except BaseException:
            # Whatever the test left must not reach the next one: a new xend for it.
            self.current = None
            self._discard(xend)
            raise

    def _discard(self, xend: Xend) -> None:
        xend.close()
        self.reaper.submit(str(xend.home.root), xend.home.tear_down)

    def close(self) -> None:
        if self.current is not None:
            self._discard(self.current)
            self.current = None
