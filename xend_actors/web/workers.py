"""A bounded pool of worker threads: at most ``size`` threads, a queue of at most ``backlog``.

A thread is started only when a task finds none idle, so an idle xend keeps only the
threads its last burst needed; a task past the backlog is refused (``submit`` says so)
rather than given a thread of its own. A worker may wait a moment for its client's next
request (``linger``); a task that comes meanwhile ends that wait and is its own. A
thread started before tracing was turned on traces itself from its next task
(``trace.py``: each thread sets its own).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import sys
import threading
from collections.abc import Callable

from xend_actors import trace

log = logging.getLogger(__name__)

Task = Callable[[], object]


class Workers:
    def __init__(self, name: str, size: int, backlog: int) -> None:
        self.name, self.size, self.backlog = name, size, backlog
        self._tasks: collections.deque[Task | None] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._threads = 0
        self._idle = 0
        self._stopped = False
        self._lingering = 0  # workers waiting in ``linger``
        self._poked = False  # the pipe may hold a wake: drained before the next wait
        self._wake, self._poke = os.pipe()  # what ends their wait when a task comes
        os.set_blocking(self._wake, False)
        os.set_blocking(self._poke, False)

    def submit(self, task: Task) -> bool:
        """Whether ``task`` will run (queued if every thread is busy)."""
        with self._ready:
            if self._stopped or len(self._tasks) >= self.backlog:
                return False
            self._tasks.append(task)
            if self._idle > len(self._tasks) - 1:
                self._ready.notify()
                return True
            if self._lingering:  # a worker waiting for its client's next request takes it
                with contextlib.suppress(OSError):  # full: the wake is on its way already
                    os.write(self._poke, b"\0")
                self._poked = True
                return True
            if self._threads >= self.size:
                return True
            self._threads += 1
        try:
            threading.Thread(target=self._run, name=self.name, daemon=True).start()
        except RuntimeError:  # no thread to be had: the busy ones take it in turn
            with self._ready:
                self._threads -= 1
            log.warning("%s: cannot start a thread; the task waits its turn", self.name)
        return True

    def linger(self, fd: int, seconds: float) -> bool:
        """On a worker: wait up to ``seconds`` for ``fd`` to become readable, unless a task
        is waiting or comes meanwhile (it is this worker's then, rather than a new
        thread's); whether ``fd`` did."""
        with self._ready:
            if self._tasks or self._stopped:
                return False
            if not self._lingering and self._poked:  # (a read of an empty pipe raises)
                _drain(self._wake)
                self._poked = False
            self._lingering += 1
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(self._wake, select.POLLIN)
            return any(ready == fd for ready, _ in poller.poll(seconds * 1000))
        except (OSError, ValueError):
            return False
        finally:
            with self._ready:
                self._lingering -= 1
                if self._stopped and not self._lingering:
                    self._close_wake()

    def stop(self) -> None:
        """No more tasks; threads end once the queue is empty (what is running runs on)."""
        with self._ready:
            self._stopped = True
            self._tasks.append(None)
            self._ready.notify_all()
            if not self._lingering:
                self._close_wake()

    def _close_wake(self) -> None:
        """Under the lock, once stopped and nobody lingers: its pipe goes too."""
        if self._wake >= 0:
            os.close(self._wake)
            os.close(self._poke)
            self._wake = self._poke = -1

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._tasks:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                task = self._tasks[0]
                if task is None:  # stop: left in the queue for every other thread
                    self._threads -= 1
                    return
                self._tasks.popleft()
            if trace.is_on() and sys.gettrace() is None:
                trace.trace_this_thread()
            try:
                task()
            except Exception:
                log.exception("%s: a task failed", self.name)
            finally:
                task = None  # an idle worker keeps nothing of its last request alive


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):  # empty
        while os.read(fd, 4096):
            pass
