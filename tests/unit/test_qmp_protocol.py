"""QMP's lines as values (qmp_protocol): the commands xend sends, byte for byte, and what
it makes of qemu's greeting, replies and events, and of lines that are none of these."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors.hypervisor.qemu.qmp_protocol import (
    MAX_LINE,
    ErrorReply,
    Event,
    Greeting,
    Return,
    command,
    decode,
    message,
    parse,
)

# What qemu 7.2 says, verbatim.
GREETING = (b'{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, '
            b'"package": "Debian 1:7.2+dfsg-7+deb12u7"}, "capabilities": ["oob"]}}\r\n')
EVENT = (b'{"timestamp": {"seconds": 1718000000, "microseconds": 5}, "event": "SHUTDOWN", '
         b'"data": {"guest": true, "reason": "guest-shutdown"}}\r\n')


def test_commands_are_the_lines_qemu_expects() -> None:
    assert command("qmp_capabilities") == b'{"execute": "qmp_capabilities"}\n'
    assert command("query-status", call_id=7) == b'{"execute": "query-status", "id": 7}\n'
    assert command("balloon", {"value": 268435456}, 8) == (
        b'{"execute": "balloon", "id": 8, "arguments": {"value": 268435456}}\n')
    assert command("cont", {}, 9) == b'{"execute": "cont", "id": 9}\n'  # no empty arguments


def test_qemus_greeting_replies_and_events_become_values() -> None:
    greeting = parse(GREETING)
    assert isinstance(greeting, Greeting)
    assert greeting.qmp["capabilities"] == ["oob"]
    assert parse(b'{"return": {}}\n') == Return(None, {})
    assert parse(b'{"return": {"status": "paused", "running": false}, "id": 3}\n') == Return(
        3, {"status": "paused", "running": False})
    assert parse(b'{"id": 4, "error": {"class": "GenericError", "desc": "No balloon device '
                 b'has been activated"}}\n') == ErrorReply(
        4, "GenericError", "No balloon device has been activated")
    assert parse(EVENT) == Event("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
    assert parse(b'{"event": "STOP", "timestamp": {}}') == Event("STOP", {})


def test_odd_replies_still_reach_their_caller() -> None:
    assert parse(b'{"id": 5, "error": "broken"}') == ErrorReply(5, "", "broken")
    assert parse(b'{"id": 6, "error": {"class": "X"}}') == ErrorReply(6, "X", "{'class': 'X'}")
    assert parse(b'{"id": 7, "error": null}') == ErrorReply(7, "", "{}")
    # an id that is not one xend gives is answered to nobody
    assert parse(b'{"id": "7", "return": 1}') == Return(None, 1)
    assert parse(b'{"id": true, "return": 1}') == Return(None, 1)
    assert parse(b'{"event": "X", "data": [1]}') == Event("X", {})


@pytest.mark.parametrize("line", [b"[]", b"3", b'"QMP"', b"null", b'{"id": 1}', b"{}"])
def test_json_that_is_no_qmp_message_is_none(line: bytes) -> None:
    assert parse(line) is None


@pytest.mark.parametrize("line", [b"", b"{", b'{"return": }', b"\xff\xfe", b"[" * 100_000,
                                  b'{"return": "' + b"x" * MAX_LINE + b'"}\n'])
def test_garbage_and_overlong_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


def test_a_line_of_max_line_bytes_is_still_read() -> None:
    line = b'{"return": "' + b"x" * (MAX_LINE - 15) + b'"}\n'
    assert len(line) == MAX_LINE
    reply = parse(line)
    assert isinstance(reply, Return) and len(reply.value) == MAX_LINE - 15


@given(st.binary(max_size=200))
def test_any_bytes_give_a_message_none_or_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        assert parse(data) is None or isinstance(parse(data), Greeting | Return | ErrorReply
                                                 | Event)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["id", "event", "data", "error",
                                                       "return", "QMP", "class", "desc"]),
                                      inner, max_size=4),
                    max_leaves=12))
def test_any_json_value_is_a_message_or_none(value: object) -> None:
    said = message(json.loads(json.dumps(value)))
    assert said is None or isinstance(said, Greeting | Return | ErrorReply | Event)
