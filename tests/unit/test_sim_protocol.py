"""The sim wire apart from its sockets (sim/protocol.py): request lines framed out of the
bytes as they come, a long line refused once, and replies and watch events read back
as values, garbage as a ValueError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound, Timeout
from xend_actors.hypervisor.base import DomainChanged, GuestMessage
from xend_actors.hypervisor.ring.messages import Shutdown, ShutdownSubtype
from xend_actors.hypervisor.sim import protocol
from xend_actors.hypervisor.sim.protocol import MAX_LINE, Lines, LineTooLong, Reply


def lines_of(lines: Lines) -> list[bytes | str]:
    """Every line there is now; a refused one as "too long"."""
    out: list[bytes | str] = []
    while True:
        try:
            line = lines.next()
        except LineTooLong:
            out.append("too long")
            continue
        if line is None:
            return out
        out.append(line)


def test_lines_come_whole_however_the_bytes_are_cut() -> None:
    lines = Lines()
    lines.feed(b'{"id": 1, "call": "ping"}\n{"id": 2, ')
    assert lines_of(lines) == [b'{"id": 1, "call": "ping"}']
    lines.feed(b'"call": "list"}')
    assert lines_of(lines) == []
    lines.feed(b"\n\nx\nrest")
    assert lines_of(lines) == [b'{"id": 2, "call": "list"}', b"", b"x"]
    assert lines.rest() == b"rest"
    assert lines.rest() == b""


def test_a_long_line_is_refused_once_as_soon_as_it_is_too_long() -> None:
    lines = Lines()
    lines.feed(b"a" * MAX_LINE)
    assert lines_of(lines) == []  # MAX_LINE bytes may still be a line
    lines.feed(b"a")
    assert lines_of(lines) == ["too long"]
    lines.feed(b"a" * (2 * MAX_LINE))  # the rest of it: skipped, not refused again
    assert lines_of(lines) == []
    lines.feed(b'aaa\n{"id": 3}\n')
    assert lines_of(lines) == [b'{"id": 3}']


def test_a_long_line_that_comes_whole_is_refused_and_the_next_one_read() -> None:
    lines = Lines()
    lines.feed(b"b" * MAX_LINE + b"\n" + b"c" * (MAX_LINE + 1) + b"\nnext\n")
    assert lines_of(lines) == [b"b" * MAX_LINE, "too long", b"next"]


def test_the_refusal_is_a_bad_request_that_says_the_limit() -> None:
    error = LineTooLong()
    assert isinstance(error, BadRequest)
    assert protocol.error_reply(None, error) == (
        b'{"id":null,"error":{"kind":"bad_request","message":"a request line must be '
        b'shorter than ' + str(MAX_LINE).encode() + b' bytes"}}\n')


@pytest.mark.parametrize("cls", [BadRequest, NotFound, Conflict, HypervisorError, Timeout])
def test_replies_come_back_as_values_with_the_matching_error(cls: type) -> None:
    assert protocol.parse_reply(protocol.ok_reply(7, [1, "two"])) == Reply(7, [1, "two"])
    reply = protocol.parse_reply(protocol.error_reply(8, cls("no way")))
    assert reply.id == 8 and reply.result is None
    assert type(reply.error) is cls and reply.error.message == "no way"


def test_a_reply_without_a_usable_id_is_for_nobody() -> None:
    assert protocol.parse_reply(b'{"id": null, "ok": 1}') == Reply(None, 1)
    assert protocol.parse_reply(b'{"id": true, "ok": 1}') == Reply(None, 1)
    reply = protocol.parse_reply(b'{"id": 1, "error": {"kind": ["odd"], "message": "m"}}')
    assert type(reply.error) is HypervisorError


@pytest.mark.parametrize("line", [b"", b"[]", b"{}", b'{"ok": 1}', b'{"id": 1, "error": "x"}',
                                  b"\xff", b"{"])
def test_garbage_is_no_reply(line: bytes) -> None:
    with pytest.raises(ValueError):
        protocol.parse_reply(line)


def test_watch_events_come_back_as_notifications() -> None:
    assert protocol.parse_event(protocol.event(4)) == DomainChanged(4)
    message = Shutdown(ShutdownSubtype.SYSRQ, key="s")
    assert protocol.parse_event(protocol.guest_event(5, message)) == GuestMessage(5, message)


@pytest.mark.parametrize("line", [b'{"event": "changed"}',
                                  b'{"event": "changed", "domid": "4"}',
                                  b'{"event": "gone", "domid": 4}', b"[]", b"nonsense"])
def test_garbage_is_no_event(line: bytes) -> None:
    with pytest.raises(ValueError):
        protocol.parse_event(line)


@given(st.binary(max_size=200))
def test_any_bytes_are_a_reply_or_a_value_error(data: bytes) -> None:
    try:
        reply = protocol.parse_reply(data)
    except ValueError:
        return
    assert reply.id is None or isinstance(reply.id, int)


def test_lines_nested_too_deep_are_garbage_too() -> None:
    with pytest.raises(ValueError):
        protocol.parse_reply(b"[" * 100_000)
    with pytest.raises(ValueError):
        protocol.parse_event(b'{"event": ' + b"[" * 100_000)
