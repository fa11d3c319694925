"""What xend and its fencing watchdog (xend-fence) agree on: where the watchdog lives
in the run dir, and the wire between them, short text lines over a Unix socket, bytes
to values and back, without the socket (``watchdog.py`` serves it,
``watchdog_client.py`` is xend's end).

xend writes and does not wait; only ``ping`` and ``status`` are answered::

    guard NAME        the domain NAME is guarded (an HA domain of this member: sent
                      before the domain is made, with its claim)
    unguard NAME      NAME is gone for good (or no longer this member's)
    begin             the guards up to the next ``commit`` are the whole set ...
    commit            ... which replaces the guarded set then (a cut-off set changes
                      nothing)
    deadline T        fence at T, seconds of CLOCK_MONOTONIC (one clock for every process
                      of the host): the last renewal sent + 0.6 TTL (the member fences at 0.5)
    disarm            no deadline, nothing guarded (a member that left its pool)
    fence             fence now
    ping            → xend-fence PID
    status          → one JSON object: {"pid", "guarded": [NAME, ...], "deadline_in":
                      seconds or null, "fenced": how many domains destroyed so far}

A line is at most ``MAX_LINE`` bytes; a longer one, or one that is none of these, is
answered with ``error MESSAGE`` and the connection is closed: nothing of that line
or after it counts (a ``begin`` without its ``commit`` changes nothing).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from xend_actors.config import XendConfig

SOCKET_NAME = "fence.sock"
PID_NAME = "fence.pid"
LOG_NAME = "xend-fence.log"  # beside xend's log
FENCED_DIR = "fenced"  # in the run dir: one record a sweep that destroyed something
MAX_LINE = 256  # a name is at most 64 characters: every good line is far shorter
MAX_GUARDED = 10_000  # names one watchdog guards (memory stays under a MiB)

# Domain names as domain/config.py allows them (at most 64 characters, no blank): the
# watchdog compares them with the hypervisor's names and nothing more.
_NAME = re.compile(r"[A-Za-z0-9_.:/+-]{1,64}")
_TIME = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


def socket_path(config: XendConfig) -> Path:
    return config.run_dir / SOCKET_NAME


def pid_path(config: XendConfig) -> Path:
    return config.run_dir / PID_NAME


def log_path(config: XendConfig) -> Path:
    return config.logfile.parent / LOG_NAME


class Verb(Enum):
    GUARD = "guard"
    UNGUARD = "unguard"
    BEGIN = "begin"
    COMMIT = "commit"
    DEADLINE = "deadline"
    DISARM = "disarm"
    FENCE = "fence"
    PING = "ping"
    STATUS = "status"


_WITH_NAME = {Verb.GUARD, Verb.UNGUARD}


@dataclass(frozen=True)
class Command:
    verb: Verb
    name: str = ""  # guard, unguard
    at: float = 0.0  # deadline: CLOCK_MONOTONIC seconds


class BadLine(ValueError):
    """A line that is not a command: the connection that sent it is closed."""


def parse(line: bytes) -> Command:
    """The command of one line (its newline dropped); BadLine if it is none."""
    if len(line) > MAX_LINE:
        raise BadLine(f"a line must be at most {MAX_LINE} bytes")
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise BadLine("a line is ASCII text") from None
    try:
        verb = Verb(words[0])
    except ValueError:
        raise BadLine(f"unknown command {words[0][:20]!r}") from None
    arguments = words[1:]
    if verb in _WITH_NAME:
        if len(arguments) != 1 or not _NAME.fullmatch(arguments[0]):
            raise BadLine(f"{verb.value} takes one domain name (1 to 64 letters, digits "
                          "and _ . : / + -)")
        return Command(verb, name=arguments[0])
    if verb is Verb.DEADLINE:
        if len(arguments) != 1 or not _TIME.fullmatch(arguments[0]):
            raise BadLine("deadline takes one time in seconds of CLOCK_MONOTONIC")
        return Command(verb, at=float(arguments[0]))
    if arguments:
        raise BadLine(f"{verb.value} takes nothing")
    return Command(verb)


def is_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def guard(name: str) -> bytes:
    return _line(Verb.GUARD, name)


def unguard(name: str) -> bytes:
    return _line(Verb.UNGUARD, name)


def deadline(at: float) -> bytes:
    if not math.isfinite(at) or at < 0:
        raise ValueError(f"not a deadline: {at!r}")
    return _line(Verb.DEADLINE, f"{at:.6f}")


def simple(verb: Verb) -> bytes:
    """The line of a command without argument."""
    return _line(verb)


def _line(verb: Verb, argument: str = "") -> bytes:
    return (f"{verb.value} {argument}" if argument else verb.value).encode("ascii") + b"\n"


class Lines:
    """Bytes as they come in, out as whole lines (newline dropped); BadLine as soon as
    a line is longer than ``MAX_LINE`` (the connection is closed then: nothing more is
    read from it)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        *lines, rest = self._buffer.split(b"\n")
        if len(rest) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
            raise BadLine(f"a line must be at most {MAX_LINE} bytes")
        self._buffer = bytearray(rest)
        return [bytes(line) for line in lines]
