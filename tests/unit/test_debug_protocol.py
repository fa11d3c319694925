"""The debug port's pure parts: cutting a client's bytes into requests, naming ops."""

from __future__ import annotations

import pytest

from xend_actors.access.hosts import is_local
from xend_actors.debug.requests import RequestReader, normalize
from xend_actors.errors import BadRequest


def errors(results: list) -> list[str]:
    return [r.message for r in results if isinstance(r, BadRequest)]


def test_plain_words_and_forms_are_requests_in_order() -> None:
    reader = RequestReader()
    assert reader.feed(b"help\n(sys.inject (a.b (x 1))) info\r\n") == [
        "help", ["sys.inject", ["a.b", ["x", "1"]]], "info"]


def test_a_line_is_served_when_its_newline_comes() -> None:
    reader = RequestReader()
    assert reader.feed(b"(he") == []
    assert reader.feed(b"lp) (sys.inject") == []
    assert reader.feed(b" (a.b 'x'))\n(info") == [["help"], ["sys.inject", ["a.b", "x"]]]
    assert reader.feed(b")\n") == [["info"]]


def test_bad_sxp_is_an_error_in_place_and_the_next_lines_are_served() -> None:
    reader = RequestReader()
    results = reader.feed(b"(help) )(\n\xff\n(sys.inject\n(quit)\n")
    assert results[0] == ["help"]
    assert errors(results) == ["bad SXP at column 8: syntax error: )",
                               "bad SXP at column 1: invalid UTF-8: byte 0xff",
                               "bad SXP at column 12: the line ends inside a form"]
    assert results[-1] == ["quit"]


def test_nesting_is_limited() -> None:
    reader = RequestReader(max_depth=8)
    assert errors(reader.feed(b"(" * 9 + b")" * 9 + b"\n")) == [
        "bad SXP at column 9: nesting deeper than 8"]
    assert reader.feed(b"(" * 8 + b")" * 8 + b"\n") != []


def test_an_oversized_line_is_one_error_and_skipped() -> None:
    reader = RequestReader(max_size=100)
    assert errors(reader.feed(b"(sys.inject (big " + b"x" * 120)) == [
        "line longer than 100 bytes"]
    assert reader.feed(b"x" * 500) == []
    assert reader.feed(b"xx)) (ignored)\nhelp\n") == ["help"]


def test_an_oversized_line_in_one_piece_is_an_error_too() -> None:
    reader = RequestReader(max_size=100)
    results = reader.feed(b"(a " + b"b " * 100 + b")\nhelp\n")
    assert errors(results) == ["line longer than 100 bytes"]
    assert results[-1] == "help"


@pytest.mark.parametrize(("request_", "form"), [
    ("help", ["help"]),
    ("traceon", ["trace", "on"]),
    ("traceoff", ["trace", "off"]),
    (["log_stderr", "on"], ["log.stderr", "on"]),
    (["sys.subscribe", "a.*", "b"], ["sys.subscribe", "a.*", "b"]),
])
def test_normalize_names_the_op(request_: object, form: list) -> None:
    assert normalize(request_) == form


@pytest.mark.parametrize("request_", [[], [["help"]]])
def test_normalize_refuses_forms_without_an_op(request_: list) -> None:
    with pytest.raises(BadRequest, match="expected"):
        normalize(request_)


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False), ("", False),
])
def test_is_local(host: str, local: bool) -> None:
    assert is_local(host) is local
