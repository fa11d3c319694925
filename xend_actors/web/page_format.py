"""How the pages write numbers, states and console output for people."""

from __future__ import annotations

import re
import time

_STATE_WORDS = {"r": "running", "b": "blocked", "p": "paused", "s": "shut down",
                "c": "crashed"}
# Colour and cursor sequences of a terminal, which a page cannot show.
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b.")
_OTHER_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def duration(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``5m 12s`` or ``9s``: the two largest units."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def cpu_seconds(value: object) -> str:
    """CPU time as ``12.3 s``; empty when xend has not measured it yet."""
    try:
        return f"{float(str(value)):.1f} s"
    except ValueError:
        return ""


def state_words(state: str, shutdown_reason: object = None) -> str:
    """The state letters (facts §4.5) as words, e.g. ``--p--`` → ``paused``."""
    words = [_STATE_WORDS[letter] for letter in state if letter in _STATE_WORDS]
    if shutdown_reason:
        words.append(f"({shutdown_reason})")
    return ", ".join(words) or "no state"


def event_time(value: object) -> str:
    """An event's Unix time as local ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(value))))
    except (ValueError, OverflowError, OSError):
        return str(value or "")


def console_text(data: bytes) -> str:
    """A console's bytes as text a page can show: lines, no terminal controls."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return _OTHER_CONTROL.sub("", _TERMINAL_CONTROL.sub("", text))


def cpu_percent(share: object) -> str:
    """A share of one cpu (1.0: one cpu busy all the time) as ``12.5 %``; empty when
    the sample could not tell."""
    try:
        value = float(str(share))
    except ValueError:
        return ""
    return "" if value != value else f"{value * 100:.1f} %"  # NaN: no rate yet


def byte_size(count: object, suffix: str = "") -> str:
    """Bytes as ``512 B``, ``12.0 KiB``, ``3.4 MiB`` or ``1.2 GiB`` (``suffix`` after the
    unit, ``/s`` for a rate); empty when the sample could not tell."""
    try:
        value = float(str(count))
    except ValueError:
        return ""
    if value != value:
        return ""
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}{suffix}" if unit == "B" else \
                f"{value:.1f} {unit}{suffix}"
        value /= 1024
    return f"{value:.1f} GiB{suffix}"


def clock_time(value: object) -> str:
    """A Unix time as local ``HH:MM:SS``."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(str(value))))
    except (ValueError, OverflowError, OSError):
        return str(value or "")
