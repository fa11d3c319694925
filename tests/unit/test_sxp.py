"""SXP parser, printers and helpers against the facts of Xen 2.0's sxp.py (xend-facts.md §1)."""

from __future__ import annotations

import enum
import math
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from xend_actors import sxp
from xend_actors.errors import BadRequest
from xend_actors.sxp import ParseError

EXAMPLES = Path(__file__).parents[1] / "data" / "reference-examples"


# --- the parser test vectors of facts §1.6 and the lexical rules of §1.2 ----------------

@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("(a b c)", [["a", "b", "c"]]),
        ("(a \"b c\" 'd e')", [["a", "b c", "d e"]]),
        ("a b", ["a", "b"]),
        ("(a 12 -3 1.5e3)", [["a", "12", "-3", "1.5e3"]]),
        ("(a ; b)", [["a", ";", "b"]]),
        ("(a<b>)", [["a", "<b", ">"]]),
        ('("\\101BC")', [["ABC"]]),
        ('("\\x41BC")', [["ABC"]]),
        ('("a\\tb\\n\\\\")', [["a\tb\n\\"]]),
        ("()", [[]]),
        ("(a (b) c)x", [["a", ["b"], "c"], "x"]),
        ("(@ (id 1))", [["@", ["id", "1"]]]),
        # §1.2 rules
        ("(a#x\n b)", [["a", "b"]]),
        ("(a[b]c)", [["a", "[b", "]c"]]),
        ("(a!b)", [["a", "!b"]]),
        ("(a{b}c)", [["a", "{b", "}c"]]),
        ("'it''s'", ["it", "s"]),
        ('a"bc"d', ['a"bc"d']),
        ("(a\x01b)", [["a\x01b"]]),
        ("\t(a\r\n\v\fb)", [["a", "b"]]),
        ('("\\a\\b\\v\\f\\r\\\'\\"")', [["\a\b\v\f\r'\""]]),
        ('("\\377\\xff\\xFF")', [["\xff\xff\xff"]]),
        ("a \x04 b", ["a"]),  # Ctrl-D where a token starts ends the input
        ("(a\x04b)", [["a\x04b"]]),  # ... but inside an atom it is just a char
        ("# only a comment", []),
        ("", []),
        # our extension: \u and \U escapes; printable non-ASCII starts an atom
        ('"\\u00e9\\U0001F600"', ["é😀"]),
        ("(é ü)", [["é", "ü"]]),
    ],
)
def test_parse_all_returns_every_top_level_value(text: str, values: list) -> None:
    assert sxp.parse_all(text) == values


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (")", "syntax error: )"),
        ("(a \x04 b)", "unexpected EOF"),
        ("(a ", "unexpected EOF"),
        ("(a (b)", "unexpected EOF"),
        ('("abc', "unexpected EOF"),
        ('"abc', "unexpected EOF"),
        ('"abc\\x4', "unexpected EOF"),
        # The original swallowed this EOF and returned nothing; we report it.
        ("(a", "unexpected EOF"),
        ("(a #comment", "unexpected EOF"),
        ("\x01", "invalid character: code 1"),
        ("(a \x7f)", "invalid character: code 127"),
        ("(a \u2003)", "invalid character: code 8195"),
        # The original crashed on these escapes; we report them.
        ('"\\q"', "invalid escape \\q"),
        ('"\\x4g"', "invalid escape \\x4g"),
        ('"\\12"', "invalid escape \\12\""),
        ('"\\400"', "invalid escape \\4"),
        ('"\\U00110000"', "invalid escape \\U00110000"),
    ],
)
def test_malformed_input_is_a_parse_error(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        sxp.parse_all(text)
    assert caught.value.reason == reason


def test_parse_error_says_line_and_column_and_is_a_bad_request() -> None:
    with pytest.raises(ParseError) as caught:
        sxp.parse_all("(vm\n  (name x)\n  (memory \x01))")
    error = caught.value
    assert (error.line, error.column) == (3, 11)
    assert str(error) == "line 3, column 11: invalid character: code 1"
    assert isinstance(error, BadRequest) and error.status == 400


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        (")", 1, 1),
        ("(a)\n\n  )", 3, 3),
        ("(a\n b", 2, 3),  # EOF is reported where the input ends
        ('("x\\q")', 1, 4),  # a bad escape is reported at its backslash
        (b"(a \xff)", 1, 4),
    ],
)
def test_error_positions(text: str | bytes, line: int, column: int) -> None:
    with pytest.raises(ParseError) as caught:
        sxp.parse_all(text)
    assert (caught.value.line, caught.value.column) == (line, column)


def test_parse_returns_the_first_value_and_rejects_empty_input() -> None:
    assert sxp.parse("(a) (b)") == ["a"]
    with pytest.raises(ParseError, match="empty input"):
        sxp.parse("  # nothing here\n")


def test_bytes_are_utf8() -> None:
    assert sxp.parse("(name 'Dom é')".encode()) == ["name", "Dom é"]
    with pytest.raises(ParseError, match="invalid UTF-8"):
        sxp.parse(b"(name \xc3)")
    with pytest.raises(ParseError, match="invalid UTF-8"):
        sxp.parse(b"(name a\xc3")


def test_nesting_depth_is_limited() -> None:
    assert sxp.parse("(" * 64 + ")" * 64, max_depth=64)
    with pytest.raises(ParseError, match="nesting deeper than 64"):
        sxp.parse("(" * 65 + ")" * 65)
    with pytest.raises(ParseError, match="nesting deeper than 2"):
        sxp.parse("(a (b (c)))", max_depth=2)


def test_input_size_is_limited() -> None:
    assert sxp.parse("(a bcd)", max_size=7) == ["a", "bcd"]
    with pytest.raises(ParseError, match="input larger than 6 bytes"):
        sxp.parse("(a bcd)", max_size=6)
    parser = sxp.Parser(max_size=10)
    parser.input("(a ")
    with pytest.raises(ParseError, match="input larger than 10 bytes"):
        parser.input("b c d e f)")


# --- the incremental parser -------------------------------------------------------------

def test_incremental_parser_yields_values_as_they_complete() -> None:
    parser = sxp.Parser()
    parser.input("(a b) (c")
    assert parser.ready()
    assert parser.get_val() == ["a", "b"]
    assert not parser.ready()
    parser.input(" d)")
    assert parser.get_val() == ["c", "d"]
    parser.input("e")
    assert not parser.ready()  # the atom may go on
    parser.input("")  # an empty chunk is EOF, as in the original
    assert parser.get_val() == "e"
    with pytest.raises(ParseError):
        parser.get_val()


def test_parser_fed_one_character_at_a_time_gives_the_same_values() -> None:
    text = (EXAMPLES / "xen_config-xendom2.sxp").read_text() + '(s "\\x41\\101\\u00e9\\n")'
    parser = sxp.Parser()
    for char in text:
        parser.input(char)
    parser.input_eof()
    values = []
    while parser.ready():
        values.append(parser.get_val())
    assert values == sxp.parse_all(text)


def test_parser_fed_one_byte_at_a_time_decodes_split_characters() -> None:
    parser = sxp.Parser()
    for byte in "(é '😀')".encode():
        parser.input(bytes([byte]))
    parser.input_eof()
    assert parser.get_val() == ["é", "😀"]


def test_a_failed_parser_keeps_failing() -> None:
    parser = sxp.Parser()
    with pytest.raises(ParseError):
        parser.input(")")
    with pytest.raises(ParseError, match="syntax error"):
        parser.input("(a)")


def test_parse_forms_says_where_each_value_starts() -> None:
    forms = sxp.parse_forms("# config\n(a 1)\n  (b\n 2) c")
    assert [(f.value, f.line, f.column) for f in forms] == [
        (["a", "1"], 2, 1), (["b", "2"], 3, 3), ("c", 4, 5)
    ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.sxp")), ids=lambda p: p.name)
def test_every_reference_example_parses(path: Path) -> None:
    values = sxp.parse_all(path.read_bytes())
    assert values and all(isinstance(v, list) for v in values)


# --- printers ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Domain-0", "Domain-0"),
        ("r----", "r----"),
        ("aa:00:00:12:34:56", "aa:00:00:12:34:56"),
        ("/boot/vmlinuz", "/boot/vmlinuz"),
        ("http://h:8002/xend/domain/5", "http://h:8002/xend/domain/5"),
        ("~user_1.x", "~user_1.x"),
        ("@", "@"),
        ("/dev/sda1 ro", "'/dev/sda1 ro'"),
        ("it's", '"it\'s"'),
        ("a@b", "'a@b'"),
        ("x=1,y", "'x=1,y'"),
        ("x\ny", "'x\\ny'"),
        ("\x01", "'\\x01'"),
        ("é", "'é'"),  # ASCII-only atom test: non-ASCII letters are quoted
        ("", "''"),  # the original printed nothing here, losing the value
        (None, "'None'"),
        (64, "64"),
        (True, "True"),
        (172.234567891, "172.234567891"),
        (1.0, "1.0"),
        (["a", [], ("b", "c d")], "(a () (b 'c d'))"),
    ],
)
def test_show(value: object, text: str) -> None:
    assert sxp.show(value) == text


PRETTY_EXAMPLE = """\
(vm
    (name ExampleDomain)
    (memory 64)
    (image
        (linux (kernel /boot/vmlinuz-2.6.9-xenU) (root '/dev/hda1 ro') (args 4))
    )
    (device (vbd (uname phy:hda1) (dev hda1) (mode r)))
    (device (vif (mac aa:00:00:38:8b:17)))
)
"""


def test_pretty_reproduces_the_original_example() -> None:
    vm = [
        "vm", ["name", "ExampleDomain"], ["memory", 64],
        ["image", ["linux", ["kernel", "/boot/vmlinuz-2.6.9-xenU"],
                   ["root", "/dev/hda1 ro"], ["args", "4"]]],
        ["device", ["vbd", ["uname", "phy:hda1"], ["dev", "hda1"], ["mode", "r"]]],
        ["device", ["vif", ["mac", "aa:00:00:38:8b:17"]]],
    ]
    assert sxp.pretty(vm) == PRETTY_EXAMPLE


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.expected.sxp")), ids=lambda p: p.name)
def test_pretty_reproduces_xm_create_dry_run_output(path: Path) -> None:
    text = path.read_text()
    printed = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    assert sxp.pretty(sxp.parse(text)) == printed


def test_pretty_short_values_stay_on_one_line() -> None:
    assert sxp.pretty(["a", ["b", "c"]]) == "(a (b c))\n"
    assert sxp.pretty("x y") == "'x y'\n"


def test_pretty_breaks_at_the_width() -> None:
    value = ["a", "bbbb", ["c", "dd"]]
    assert sxp.pretty(value, width=len("(a bbbb (c dd))")) == "(a bbbb (c dd))\n"
    assert sxp.pretty(value, width=12) == "(a\n    bbbb\n    (c dd)\n)\n"
    assert sxp.pretty(value, width=8) == "(a\n    bbbb\n    (c\n        dd\n    )\n)\n"


# --- helpers ----------------------------------------------------------------------------

VIF = sxp.parse("(vif (@ (id vif1) (x 2)) (mac aa:00:00:00:00:12) (mac other) (bridge xen-br0) 7)")


def test_name_children_and_attributes() -> None:
    assert sxp.name(VIF) == "vif"
    assert sxp.name("atom") == "atom"
    assert sxp.name([]) is None
    assert sxp.attributes(VIF) == [["id", "vif1"], ["x", "2"]]
    assert sxp.attribute(VIF, "x") == "2"
    assert sxp.attribute(VIF, "y", "none") == "none"
    assert sxp.children(VIF)[0] == ["mac", "aa:00:00:00:00:12"]
    assert sxp.children(VIF, "mac") == [["mac", "aa:00:00:00:00:12"], ["mac", "other"]]
    assert sxp.children("atom") == []


def test_child_lookups() -> None:
    vm = sxp.parse((EXAMPLES / "xen_config-xendom1.sxp").read_text())
    assert sxp.child_value(vm, "memory") == "64"
    assert sxp.child_value(vm, "image")[0] == "linux"
    assert sxp.child_value(vm, "cpu", "0") == "0"
    assert sxp.child_value(["vm", ["cpu"]], "cpu", "none") == "none"
    assert sxp.child(vm, "device") == ["device", ["vif"]]
    assert sxp.child(vm, "nothing", "dflt") == "dflt"
    assert sxp.child0(VIF) == ["mac", "aa:00:00:00:00:12"]
    assert sxp.child1(VIF) == ["mac", "other"]
    assert sxp.child2(VIF) == ["bridge", "xen-br0"]
    assert sxp.child3(VIF) == "7"
    assert sxp.child4(VIF, "past the end") == "past the end"
    assert sxp.child_at(VIF, -1, "no negative index") == "no negative index"


def test_id_lookups() -> None:
    vm = sxp.parse((EXAMPLES / "xen_config-xendom2.sxp").read_text())
    vif2 = ["vif", ["@", ["id", "vif2"]], ["mac", "aa:00:00:00:10:12"]]
    assert sxp.has_id(vif2, "vif2")
    assert not sxp.has_id(vif2, "vif1")
    assert sxp.with_id(vm, "vif2") == vif2  # found at depth 2
    assert sxp.with_id(vm, "vif3", "none") == "none"
    assert sxp.child_with_id(vm, "vif2") is None  # not a direct child
    assert sxp.child_with_id(sxp.children(vm, "device")[1], "vif2") == vif2


def test_merge_prefers_the_first_and_keeps_order() -> None:
    s1 = sxp.parse("(vm (@ (id 1)) (memory 64) (device (vbd (dev a))) (name x) free)")
    s2 = sxp.parse("(vm (cpu 2) (memory 128) (device (vbd (dev b) (mode r))) (device (vif)) y)")
    assert sxp.merge(s1, s2) == sxp.parse(
        "(vm (@ (id 1)) (memory 64) (device (vbd (dev a) (mode r))) (device (vif)) (name x)"
        " (cpu 2) free)"
    )
    assert sxp.merge(None, s2) is s2
    assert sxp.merge(s1, None) is s1
    assert sxp.merge("a", "b") == "a"


# --- properties -------------------------------------------------------------------------

TEXTS = st.text(st.characters() | st.sampled_from("()'\"\\#;[]@ \t\n\x04-:/"), max_size=12)


def values(depth: int = 5) -> st.SearchStrategy:
    if depth == 0:
        return TEXTS
    return TEXTS | st.lists(st.deferred(lambda: values(depth - 1)), max_size=5)


@given(values())
def test_show_and_pretty_read_back_as_the_same_value(value: sxp.Value) -> None:
    assert sxp.parse(sxp.show(value)) == value
    assert sxp.parse(sxp.pretty(value, width=20)) == value
    assert sxp.parse(sxp.pretty(value)) == value


@given(st.lists(values(3), max_size=4))
def test_a_sequence_of_printed_values_reads_back(vals: list) -> None:
    assert sxp.parse_all(" ".join(sxp.show(v) for v in vals)) == vals


def assert_parses_or_fails_cleanly(text: str | bytes) -> None:
    """Input is either rejected with a ParseError or read into values that print back."""
    try:
        values = sxp.parse_all(text)
    except ParseError:
        return
    assert sxp.parse_all(" ".join(sxp.show(v) for v in values)) == values


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    assert_parses_or_fails_cleanly(data)


@given(st.text(st.sampled_from("()\"'\\x0u1#;! a\n\x04é\x01"), max_size=60))
def test_arbitrary_sxp_like_text_parses_or_raises_parse_error(text: str) -> None:
    assert_parses_or_fails_cleanly(text)


@given(st.text(st.sampled_from("()\"'\\x41u00e9#;! ab\n"), max_size=40), st.data())
def test_chunking_does_not_change_the_result(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    def outcome(pieces: list[str]) -> object:
        parser = sxp.Parser()
        try:
            for piece in pieces:
                if piece:
                    parser.input(piece)
            parser.input_eof()
        except ParseError as e:
            return (e.reason, e.line, e.column)
        got = []
        while parser.ready():
            got.append(parser.get_val())
        return got

    assert outcome(chunks) == outcome([text])


# --- the fast path agrees with the reference (state machine, _show_reference) ---------------

def fast(
    text: str | bytes, max_depth: int = sxp.MAX_DEPTH, max_size: int = sxp.MAX_SIZE
) -> list | None:
    return sxp._parse_fast(text, max_depth, max_size)


def outcome(read, text: str | bytes, **limits: int) -> tuple:
    """What ``read`` makes of ``text``: its values, or the whole message of its ParseError."""
    try:
        return ("values", read(text, **limits))
    except ParseError as e:
        return ("error", str(e), e.reason, e.line, e.column)


def assert_agrees_with_reference(text: str | bytes, **limits: int) -> bool:
    """``parse_all`` and ``parse`` agree with the state machine; says if the fast path read it."""
    expected = outcome(sxp._parse_all_reference, text, **limits)
    quick = fast(text, **limits)
    assert quick is None or ("values", quick) == expected  # it gives up, or it is right
    assert outcome(sxp.parse_all, text, **limits) == expected
    assert outcome(sxp.parse, text, **limits) == outcome(sxp._parse_reference, text, **limits)
    return quick is not None


def assert_agrees_as_property(text: str | bytes, **limits: int) -> None:
    """As a property: ``--hypothesis-show-statistics`` shows how often the fast path read it."""
    read = assert_agrees_with_reference(text, **limits)
    event("fast path read it" if read else "fast path gave up")


@pytest.mark.parametrize(
    "text",
    [
        "(a b c)", "(a \"b c\" 'd e')", "a b", "()", "(a (b) c)x", "(@ (id 1))",
        "(a#x\n b)", "'it''s'", '("\\101BC")', '("a\\tb\\n\\\\")', '"\\u00e9\\U0010FFFF"',
        "# only a comment", "", "\t(a\r\n\v\fb)", '(s "x\x01\x04é")', "(a)(b)'c'd",
        "(domain (id 5) (name x) (config (vm (root '/dev/sda1 ro') (memory 64))))\n",
    ],
)
def test_the_fast_path_reads_common_input(text: str) -> None:
    assert fast(text) == sxp._parse_all_reference(text)
    assert fast(text.encode()) == sxp._parse_all_reference(text)


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("(a ; b)", {}), ("(a<b>)", {}), ("(a[b]c)", {}), ("(a!b)", {}),  # separators
        ('a"bc"d', {}), ("a'b", {}), ("a\\b", {}), ("(a\x01b)", {}), ("(a\x04b)", {}),
        ("é", {}), ("(x é)", {}), ("a \x04 b", {}), ("\x01", {}), ("(a \u2003)", {}),
        ('"\\q"', {}), ('"\\x4g"', {}), ('"\\12"', {}), ('"\\U00110000"', {}),
        ("(a", {}), ('"abc', {}), (")", {}), ("(a (b)", {}), ("(a #c", {}),
        (b"(a \xff)", {}), (b"(a \xc3", {}),
        ("(a (b (c)))", {"max_depth": 2}), ("((a b))", {"max_depth": 1}),
        ("(a bcd)", {"max_size": 6}),
    ],
)
def test_the_fast_path_leaves_the_rest_to_the_state_machine(text: str | bytes,
                                                             limits: dict) -> None:
    assert fast(text, **limits) is None
    assert_agrees_with_reference(text, **limits)


def test_the_fast_path_reads_a_1000_domain_reply() -> None:
    reply = [["domain", ["id", str(i)], ["name", f"guest-{i}"], ["cpu_time", 0.5 * i],
              ["devices"], ["config", ["vm", ["root", "/dev/sda1 ro"], ["memory", "16"]]]]
             for i in range(1000)]
    text = sxp.show(reply)
    assert fast(text) == sxp._parse_all_reference(text)
    assert fast(text) is not None


@settings(max_examples=500)
@given(values(4))
def test_printed_values_are_read_by_the_fast_path(value: sxp.Value) -> None:
    text = sxp.show(value)
    assert fast(text) == [value] == sxp._parse_all_reference(text)
    spaced = sxp.pretty(value, width=20)
    assert fast(spaced) == [value] == sxp._parse_all_reference(spaced)


SYNTAX = "()\"'\\#;{}<>[]! \t\n"
SXP_ALPHABET = (
    st.sampled_from(SYNTAX + "abxuU0147@-./:\r\v\f\x04\x01\x7fé\u2003\U0001F600")
    | st.sampled_from(["\\x4", "\\x41", "\\101", "\\400", "\\u00e9", "\\U0010FFFF",
                       "\\U00110000", "\\n", "\\'", '\\"', "# c\n"])
    # pieces of what the fast path reads, so that it reads a good share of the texts
    | st.sampled_from(["(", ")", " ", "\n", "ab", "1.5", "/x:y", "(a b)", "()", "'a b'",
                       '"c\\td"', "'\\x01'"])
)
SXP_TEXTS = st.lists(SXP_ALPHABET, max_size=40).map("".join)
LIMITS = st.fixed_dictionaries({
    "max_depth": st.integers(0, 4) | st.just(sxp.MAX_DEPTH),
    "max_size": st.integers(0, 60) | st.just(sxp.MAX_SIZE),
})


@settings(max_examples=500)
@given(SXP_TEXTS, LIMITS)
def test_the_fast_path_agrees_on_sxp_like_text(text: str, limits: dict) -> None:
    assert_agrees_as_property(text, **limits)


@settings(max_examples=500)
@given(st.text(max_size=40))
def test_the_fast_path_agrees_on_arbitrary_text(text: str) -> None:
    assert_agrees_as_property(text)


@settings(max_examples=500)
@given(values(3), st.integers(0, 200), st.integers(0, 3), SXP_ALPHABET)
def test_the_fast_path_agrees_on_damaged_printed_values(
    value: sxp.Value, at: int, cut: int, insert: str
) -> None:
    text = sxp.show(value)
    at %= len(text) + 1
    assert_agrees_as_property(text[:at] + insert + text[at + cut :])


SXP_BYTES = st.lists(
    st.sampled_from([c.encode() for c in SYNTAX + "abx41é😀\x04"])
    | st.sampled_from([b"\xc3", b"\xff", b"\xed\xa0\x80", b"\x80", b"\\x41"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=500)
@given(SXP_BYTES | st.binary(max_size=40), LIMITS)
def test_the_fast_path_agrees_on_bytes(data: bytes, limits: dict) -> None:
    assert_agrees_as_property(data, **limits)


class Colour(enum.StrEnum):
    RED = "red"
    DARK = "dark red"


SHOWN = st.recursive(
    TEXTS | st.sampled_from(list(Colour)) | st.none() | st.booleans() | st.integers()
    | st.floats() | st.sampled_from([math.inf, -0.0, 1e22, 1.0]),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner),
    max_leaves=30,
)


@settings(max_examples=500)
@given(SHOWN)
def test_show_prints_what_the_reference_printer_prints(value: object) -> None:
    assert sxp.show(value) == sxp._show_reference(value)
