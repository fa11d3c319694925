"""The fencing watchdog's wire (pool/watchdog_protocol.py): every command a xend writes
reads back as itself, and no bytes at all make anything but a command or a BadLine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors.pool import watchdog_protocol as protocol
from xend_actors.pool.watchdog_protocol import MAX_LINE, BadLine, Command, Lines, Verb


def read(line: bytes) -> Command:
    assert line.endswith(b"\n")
    return protocol.parse(line[:-1])


def test_what_xend_writes_reads_back() -> None:
    assert read(protocol.guard("web-1.a:b/c+d")) == Command(Verb.GUARD, name="web-1.a:b/c+d")
    assert read(protocol.unguard("x")) == Command(Verb.UNGUARD, name="x")
    assert read(protocol.deadline(12345.678901)) == Command(Verb.DEADLINE, at=12345.678901)
    for verb in (Verb.BEGIN, Verb.COMMIT, Verb.DISARM, Verb.FENCE, Verb.PING, Verb.STATUS):
        assert read(protocol.simple(verb)) == Command(verb)


@pytest.mark.parametrize("line", [
    b"", b"guard", b"guard ", b"guard a b", b"guard a\tb", b"guard " + b"a" * 65,
    b"guard caf\xc3\xa9", b"GUARD a", b"deadline", b"deadline 1e9", b"deadline -1",
    b"deadline inf", b"deadline 1.0000000001", b"ping me", b"status 1", b"x" * (MAX_LINE + 1),
])
def test_anything_else_is_a_bad_line(line: bytes) -> None:
    with pytest.raises(BadLine):
        protocol.parse(line)


@given(st.binary(max_size=300))
def test_no_bytes_make_anything_but_a_command_or_a_bad_line(line: bytes) -> None:
    try:
        command = protocol.parse(line)
    except BadLine:
        return
    assert isinstance(command, Command)


def test_lines_come_whole_in_pieces_of_any_size_and_a_long_one_is_refused_early() -> None:
    lines = Lines()
    assert lines.feed(b"gua") == []
    assert lines.feed(b"rd a\nping\nsta") == [b"guard a", b"ping"]
    assert lines.feed(b"tus\n") == [b"status"]
    with pytest.raises(BadLine):
        Lines().feed(b"x" * (MAX_LINE + 1))  # no newline yet: refused all the same
    with pytest.raises(BadLine):
        Lines().feed(b"ping\n" + b"x" * (MAX_LINE + 1) + b"\n")


def test_deadlines_that_are_not_times_are_not_written() -> None:
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError):
            protocol.deadline(bad)
