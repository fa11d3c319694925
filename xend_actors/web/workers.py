"""A bounded pool of worker threads: at most ``size`` threads, a queue of at most ``backlog``.

A thread is started only when a task finds none idle, so an idle xend keeps only the
threads its last burst needed; a task past the backlog is refused (``submit`` says so)
rather than given a thread of its own. A thread started before tracing was turned on
traces itself from its next task (``trace.py``: each thread sets its own).
"""

from __future__ import annotations

import collections
import logging
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

    def submit(self, task: Task) -> bool:
        """Whether ``task`` will run (queued if every thread is busy)."""
        with self._ready:
            if self._stopped or len(self._tasks) >= self.backlog:
                return False
            self._tasks.append(task)
            if self._idle > len(self._tasks) - 1:
                self._ready.notify()
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

    def stop(self) -> None:
        """No more tasks; threads end once the queue is empty (what is running runs on)."""
        with self._ready:
            self._stopped = True
            self._tasks.append(None)
            self._ready.notify_all()

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
