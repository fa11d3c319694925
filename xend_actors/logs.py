"""Where xend's log lines go and how they look (facts §12).

The module owns the handlers it puts on the root logger: a size-rotated log file and,
when asked, a copy on stderr. It also points the daemon's own stdout and stderr at the
debug log, so a stray print or a crash trace is kept too (facts §2, ``xend-debug.log``).
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import dataclass
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path

from xend_actors.errors import XendError

LOG_FORMAT = "[%(asctime)s xend] %(levelname)s (%(module)s:%(lineno)d) %(message)s"
STDERR_FORMAT = "[xend] %(levelname)s (%(module)s:%(lineno)d) %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_BYTES = 1 << 20
BACKUP_COUNT = 5

# Libraries that log every request, message or netlink packet at DEBUG.
NOISY_LOGGERS = ("werkzeug", "pykka", "pyroute2", "urllib3", "asyncio")


@dataclass
class _Installed:
    """The handlers this module put on the root logger, so it can replace them."""

    file: logging.Handler | None = None
    stderr: logging.Handler | None = None
    level: int = logging.NOTSET


_installed = _Installed()


class _ExpectedErrors(logging.Filter):
    """Drops pykka's traceback of an actor's ``XendError`` handed back to its caller (a
    domain not found, a bad config): the caller answers it, and the web layer logs it in
    one line. Any other exception, a bug, keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.levelno <= logging.INFO and isinstance(error, XendError))


_EXPECTED = _ExpectedErrors()


class _RotatingLog(RotatingFileHandler):
    """The log file, each record formatted once: the standard handler formats it for
    its size check and again to write it (two of a line's three formattings; the
    ``emit`` runs under the handler's lock, so the one kept is this record's)."""

    _last: tuple[logging.LogRecord, str] | None = None
    _regular = True
    _size = 0  # characters in the file, a byte each but for the rare non-ASCII ones

    def format(self, record: logging.LogRecord) -> str:
        last = self._last
        if last is not None and last[0] is record:
            return last[1]
        text = super().format(record)
        self._last = (record, text)
        return text

    def _open(self) -> TextIOWrapper:
        stream = super()._open()
        # The standard size check asks this (bpo-45401: never rotate what is not a
        # regular file) with two stats for every record; it is asked once a file here.
        status = os.fstat(stream.fileno())
        self._regular = stat.S_ISREG(status.st_mode)
        self._size = status.st_size
        return stream

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        # The size is counted, not asked of the file: the standard seek and tell flush
        # the stream for every record. Only xend writes its log.
        if self.stream is None:
            self.stream = self._open()
        if not self._regular or self.maxBytes <= 0:
            return False
        return self._size + len(self.format(record)) + 1 >= self.maxBytes

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
            self._size += len(self.format(record)) + 1
        finally:
            self._last = None  # not keeping the record (and its arguments) alive


def setup_logging(logfile: Path, level: str = "DEBUG", *, to_stderr: bool = False) -> None:
    """Send every log record at ``level`` or above to ``logfile`` (and stderr if asked).

    The root logger is configured, so the libraries' records land in the file too.
    Calling it again replaces what the previous call installed.
    """
    root = logging.getLogger()
    for handler in (_installed.file, _installed.stderr):
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
    _installed.file = _installed.stderr = None

    root.setLevel(level.upper())
    _installed.level = root.level
    # No format here shows a thread's name or a process id: looking them up for each
    # record took a third of a log line's cost.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # A logger's own level lets its records past the root's, so quieten them here.
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(_installed.level, logging.INFO))
    logging.getLogger("pykka").addFilter(_EXPECTED)  # once: a filter set holds it once
    # werkzeug's INFO lines are an access log, one per request: the original's log had
    # none, and at a thousand requests a second they cost more than the request itself.
    logging.getLogger("werkzeug").setLevel(max(_installed.level, logging.WARNING))

    logfile.parent.mkdir(parents=True, exist_ok=True)
    handler = _RotatingLog(
        logfile, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler.setLevel(_installed.level)
    root.addHandler(handler)
    _installed.file = handler
    set_stderr(to_stderr)


def set_stderr(on: bool) -> None:
    """Copy log records to stderr, or stop doing so."""
    root = logging.getLogger()
    if on and _installed.stderr is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
        handler.setLevel(_installed.level)
        root.addHandler(handler)
        _installed.stderr = handler
    elif not on and _installed.stderr is not None:
        root.removeHandler(_installed.stderr)
        _installed.stderr = None


def redirect_std_streams(debug_log: Path) -> None:
    """Point file descriptors 1 and 2 at ``debug_log`` (appending), line-buffered."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    debug_log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(debug_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # If fd 1 or 2 was closed before, the file itself may already have become that fd.
    if fd not in (1, 2):
        os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
