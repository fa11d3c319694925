"""Tracing and the debug switches: what the debug port turns on to see inside xend.

Tracing writes every call and exception in the ``xend_actors`` package to the trace
file, one line each (time, [thread], module:function:line, event), from ``start`` until
``stop`` (facts §11.3 ``(trace on|off)``). The file is truncated by ``start`` and
tracing stops by itself when the file reaches ``MAX_BYTES``.

Python 3.11 can only set a trace function for the calling thread or for threads not
started yet, so each thread sets its own:

* the thread that calls ``start``, at once;
* threads started later (HTTP requests, new actors), through ``threading.settrace``;
* actor threads already running: ``start`` tells every ``TracedActor`` ``SetTrace``,
  which it handles in its own thread. An actor handles its messages in order, so
  whatever is asked of it after ``start`` returns is traced.

Tracing costs nothing while off: once it stops, each thread's trace function takes
itself out at that thread's next call.

``switches`` holds the debug port's ``(debug.msg on|off)`` and ``(debug.controller
on|off)`` flags; the modules they concern read them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import pykka

log = logging.getLogger(__name__)

MAX_BYTES = 64 << 20
PACKAGE = "xend_actors"
_MAX_MESSAGE = 200  # characters of an exception's message in a trace line


@dataclass
class Switches:
    """Diagnostic switches set from the debug port and read by the modules they concern."""

    messages: bool = False  # log every control message at DEBUG
    controllers: bool = False  # log device controller activity at DEBUG


switches = Switches()


@dataclass(frozen=True)
class SetTrace:
    """Asks a ``TracedActor`` to trace its own thread, if tracing is on."""


class TracedActor(pykka.ThreadingActor):
    """A pykka actor whose thread ``start`` can trace: xend's actors inherit this.

    A subclass that overrides ``on_receive`` must pass messages it does not know
    to ``super().on_receive``.
    """

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SetTrace):
            trace_this_thread()
            return None
        return super().on_receive(message)


class _Trace:
    """The open trace file, shared by every traced thread; guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file: TextIO | None = None
        self.path: Path | None = None
        self.size = 0
        self.limit = MAX_BYTES


_trace = _Trace()


def is_on() -> bool:
    return _trace.file is not None


def trace_this_thread() -> None:
    """Trace the calling thread, if tracing is on: for a long-lived thread that is not an
    actor's (an event loop, say), run by its owner when its actor gets ``SetTrace``."""
    if is_on():
        sys.settrace(_on_call)


def start(path: Path, limit: int = MAX_BYTES) -> None:
    """Trace every thread of xend into ``path`` (truncated first); nothing if already on."""
    with _trace.lock:
        if _trace.file is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _trace.file = path.open("w", encoding="utf-8")
        _trace.path, _trace.size, _trace.limit = path, 0, limit
    log.info("Tracing to %s", path)
    threading.settrace(_on_call)
    sys.settrace(_on_call)
    for ref in pykka.ActorRegistry.get_by_class(TracedActor):
        ref.tell(SetTrace())


def stop() -> None:
    """Stop tracing and close the trace file; nothing if tracing is off."""
    with _trace.lock:
        path = _trace.path
        _close_locked()
    if path is not None:
        log.info("Tracing to %s stopped", path)


def _close_locked() -> None:
    threading.settrace(None)
    if _trace.file is not None:
        _trace.file.close()
    _trace.file = _trace.path = None


def _on_call(frame: FrameType, event: str, arg: Any) -> Any:
    """The per-thread trace function: sees every call, keeps those inside xend."""
    if _trace.file is None:
        sys.settrace(None)
        return None
    module = frame.f_globals.get("__name__", "")
    if module == __name__ or not (module == PACKAGE or module.startswith(PACKAGE + ".")):
        return None
    _write(frame, module, "call")
    frame.f_trace_lines = False  # only calls and exceptions, not every line
    return _in_frame


def _in_frame(frame: FrameType, event: str, arg: Any) -> Any:
    """The trace function of one traced frame: reports exceptions passing through it."""
    if _trace.file is None:
        return None
    if event == "exception":
        kind, value, _traceback = arg
        message = str(value).replace("\n", "\\n")[:_MAX_MESSAGE]
        _write(frame, frame.f_globals.get("__name__", ""),
               f"exception {kind.__name__}: {message}")
    return _in_frame


def _write(frame: FrameType, module: str, what: str) -> None:
    now = time.time()
    line = (
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}.{int(now % 1 * 1e6):06d}"
        f" [{threading.current_thread().name}] {module}:{frame.f_code.co_name}:{frame.f_lineno}"
        f" {what}\n"
    )
    with _trace.lock:
        if _trace.file is None:
            return
        _trace.file.write(line)
        _trace.size += len(line)
        full = _trace.size >= _trace.limit
        if full:
            _trace.file.write(f"tracing stopped: the trace file reached {_trace.limit} bytes\n")
            _close_locked()
    if full:
        log.warning("Tracing stopped: the trace file reached %d bytes", _trace.limit)
