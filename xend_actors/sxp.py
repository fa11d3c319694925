"""SXP, the s-expression text that xend reads and writes: parser, printers, element helpers.

This module owns the text form of every structured value that crosses xend's edges
(HTTP bodies, config files, the store, the debug port). A value is a ``str`` or a
``list`` of values; the parser never produces numbers. It follows Xen 2.0's
``sxp.py`` and ``PrettyPrint.py`` (see xend-facts.md §1), with these decisions:

* Fixed: a bad escape (``\\q``, ``\\x4``, ``\\400``) is a ParseError ``invalid escape``;
  the original crashed.
* Fixed: input ending inside an open list is ``unexpected EOF`` even when it ends
  right after an atom or a comment (``(a``); the original swallowed that EOF and
  produced nothing.
* Fixed: the empty string prints as ``''``, so printing and re-reading keeps it;
  ``parse('')`` raises ``empty input`` instead of crashing.
* Kept: Ctrl-D (0x04) where a token would start ends the input.
* New: limits on nesting depth (``MAX_DEPTH``) and input size (``MAX_SIZE``,
  counted in characters of ``str`` input or bytes of ``bytes`` input).
* Text, not bytes: ``bytes`` input is decoded as UTF-8 (bad UTF-8 is a ParseError).
  Where a token would start, the original accepted ASCII printable characters; we
  accept any character for which ``str.isprintable()`` holds, so ``é`` starts an atom
  while a non-printable one (a control or non-ASCII space) is ``invalid character``.
* Speed: ``parse``, ``parse_all`` and ``show`` take a fast path for the common input
  (``_parse_fast``, ``_show_list``); the state machine and ``_show_reference`` are the
  reference, and the tests check that the fast path agrees with them.
* Printer: a string prints bare only if it is ``@`` or made of ASCII letters, digits
  and ``. - _ : / ~``; anything else is quoted with Python's ``repr``, as the original
  did. Beyond the escapes of the original (``\\t \\n \\r \\\\ \\' \\" \\xHH`` ...) that may
  write ``\\uXXXX`` and ``\\UXXXXXXXX`` for non-printable code points above 0xFF; the
  parser reads both (an extension), so ``parse(show(s)) == s`` for every ``str``.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, Any

from xend_actors.errors import BadRequest

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13; mypy has it

Value = str | list
"""An SXP value: a ``str`` or a ``list`` of values."""

MIME_TYPE = "application/sxp"
MAX_DEPTH = 64
MAX_SIZE = 1 << 20


class ParseError(BadRequest):
    """The input is not well-formed SXP; says where (1-based line and column) and why."""

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Form:
    """A top-level value and where it starts, for error messages that point into a file."""

    value: Value
    line: int
    column: int


# --- parser ---------------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\n\v\f\r]*")
_ATOM_REST = re.compile(r"[^ \t\n\v\f\r#{}()<>\[\]!;]*")
_STRING_RUN = {'"': re.compile(r'[^"\\]*'), "'": re.compile(r"[^'\\]*")}
_ESCAPE = re.compile(
    r"""\\(?:[abtnvfr\\'"]|x[0-9a-fA-F]{2}|[0-3][0-7]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"""
)
# What a valid escape can start with: seen at the end of a chunk, wait for more input.
_ESCAPE_START = re.compile(r"\\(?:x[0-9a-fA-F]?|[0-3][0-7]?|u[0-9a-fA-F]{0,3}|U[0-9a-fA-F]{0,7})?")
_NAMED_ESCAPES = {
    "a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
    "\\": "\\", "'": "'", '"': '"',
}
_END_OF_TEXT = "\x04"


def _run_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where the run of ``pattern`` from ``pos`` ends; the patterns above given to it
    always match there (a run may be empty, an escape start is a backslash)."""
    match = pattern.match(text, pos)
    assert match is not None
    return match.end()


class _Mode(Enum):
    START = auto()  # between tokens
    ATOM = auto()
    STRING = auto()
    COMMENT = auto()
    END = auto()  # input is over; more input is ignored


class Parser:
    """Incremental SXP parser: feed chunks with ``input``, take values with ``get_val``.

    An empty chunk means end of input, as in the original. After a ParseError the
    parser is spent: further input raises the same error again.
    """

    def __init__(self, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE) -> None:
        self.max_depth = max_depth
        self.max_size = max_size
        self._forms: deque[Form] = deque()
        self._stack: list[list[Value]] = []  # the open lists, outermost first
        self._mode = _Mode.START
        self._token: list[str] = []  # pieces of the atom or string being read
        self._quote = ""
        self._start = (1, 1)  # where the top-level value being read starts
        self._carry = ""  # an escape cut by the end of a chunk
        self._undecoded = b""  # a UTF-8 sequence cut by the end of a chunk
        self._size = 0
        self._line = 1
        self._column = 1
        self._error: ParseError | None = None

    def input(self, chunk: str | bytes) -> None:
        """Parse ``chunk``; an empty chunk means end of input."""
        if not chunk:
            self.input_eof()
            return
        self._raise_if_failed()
        if self._mode is _Mode.END:
            return
        self._size += len(chunk)
        if self._size > self.max_size:
            raise self._fail(f"input larger than {self.max_size} bytes")
        self._scan(self._decode(chunk) if isinstance(chunk, bytes) else chunk, eof=False)

    def input_eof(self) -> None:
        """End the input: completes a pending top-level atom, fails inside a list or string."""
        self._raise_if_failed()
        if self._mode is _Mode.END:
            return
        if self._undecoded:
            raise self._fail("invalid UTF-8: input ends inside a character")
        self._scan("", eof=True)

    def ready(self) -> bool:
        """True if a complete top-level value is waiting."""
        return bool(self._forms)

    def get_val(self) -> Value:
        """Remove and return the first complete top-level value."""
        return self.get_form().value

    def get_form(self) -> Form:
        """Remove and return the first complete top-level value with where it starts."""
        if not self._forms:
            raise ParseError("no complete value", self._line, self._column)
        return self._forms.popleft()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise ParseError(self._error.reason, self._error.line, self._error.column)

    def _fail(self, reason: str) -> ParseError:
        self._error = ParseError(reason, self._line, self._column)
        self._mode = _Mode.END
        return self._error

    def _decode(self, chunk: bytes) -> str:
        data = self._undecoded + chunk
        try:
            text, used = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError as e:
            self._scan(data[: e.start].decode(), eof=False)  # so the error points at the byte
            if self._mode is _Mode.END:
                return ""
            raise self._fail(f"invalid UTF-8: byte 0x{data[e.start]:02x}") from None
        self._undecoded = data[used:]
        return text

    def _advance(self, text: str, start: int, end: int) -> None:
        newlines = text.count("\n", start, end)
        if newlines:
            self._line += newlines
            self._column = end - text.rindex("\n", start, end)
        else:
            self._column += end - start

    def _emit(self, value: Value) -> None:
        if self._stack:
            self._stack[-1].append(value)
        else:
            self._forms.append(Form(value, *self._start))

    def _scan(self, text: str, eof: bool) -> None:
        text, self._carry = self._carry + text, ""
        i, n = 0, len(text)
        while i < n and self._mode is not _Mode.END:
            if self._mode is _Mode.START:
                j = _run_end(_SPACES, text, i)
                self._advance(text, i, j)
                i = j
                if i == n:
                    break
                if not self._stack:
                    self._start = (self._line, self._column)
                j = i + 1
                c = text[i]
                if c == "(":
                    if len(self._stack) >= self.max_depth:
                        raise self._fail(f"nesting deeper than {self.max_depth}")
                    self._stack.append([])
                elif c == ")":
                    if not self._stack:
                        raise self._fail("syntax error: )")
                    self._emit(self._stack.pop())
                elif c == "#":
                    self._mode = _Mode.COMMENT
                elif c in "\"'":
                    self._mode, self._quote, self._token = _Mode.STRING, c, []
                elif c == _END_OF_TEXT:
                    self._end_of_input()
                elif c.isprintable():
                    self._mode, self._token = _Mode.ATOM, [c]
                else:
                    raise self._fail(f"invalid character: code {ord(c)}")
            elif self._mode is _Mode.ATOM:
                j = _run_end(_ATOM_REST, text, i)
                self._token.append(text[i:j])
                if j < n:  # the terminator is left for START to read
                    self._emit("".join(self._token))
                    self._mode = _Mode.START
            elif self._mode is _Mode.COMMENT:
                j = text.find("\n", i)
                if j < 0:
                    j = n
                else:
                    self._mode = _Mode.START
            else:
                j = self._scan_string(text, i, eof)
                if j < 0:  # an escape was cut short; wait for the rest
                    return
            self._advance(text, i, j)
            i = j
        if eof:
            self._end_of_input()

    def _scan_string(self, text: str, i: int, eof: bool) -> int:
        """Read string text from ``i``; return where to go on, or -1 to wait for more input."""
        j = _run_end(_STRING_RUN[self._quote], text, i)
        self._token.append(text[i:j])
        if j == len(text):
            return j
        if text[j] == self._quote:
            self._emit("".join(self._token))
            self._mode = _Mode.START
            return j + 1
        escape = _ESCAPE.match(text, j)
        char = _unescape(escape.group()) if escape else None
        if escape and char is not None:
            self._token.append(char)
            return escape.end()
        self._advance(text, i, j)  # what follows is about the escape at j
        if _ESCAPE_START.fullmatch(text, j):
            if not eof:
                self._carry = text[j:]
                return -1
            self._advance(text, j, len(text))
            raise self._fail("unexpected EOF")
        bad = text[j : _run_end(_ESCAPE_START, text, j) + 1]
        raise self._fail(f"invalid escape {bad if bad.isprintable() else repr(bad)}")

    def _end_of_input(self) -> None:
        if self._mode is _Mode.ATOM:
            self._emit("".join(self._token))
            self._mode = _Mode.START
        if self._mode is _Mode.STRING or self._stack:
            raise self._fail("unexpected EOF")
        self._mode = _Mode.END


def _unescape(escape: str) -> str | None:
    """The character an escape sequence stands for; None if it is out of range."""
    kind = escape[1]
    if kind in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[kind]
    code = int(escape[1:], 8) if kind in "0123" else int(escape[2:], 16)
    return chr(code) if code <= 0x10FFFF else None


def _read(text: str | bytes, max_depth: int, max_size: int) -> Parser:
    parser = Parser(max_depth, max_size)
    parser.input(text)
    parser.input_eof()
    return parser


def parse_forms(
    text: str | bytes, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE
) -> list[Form]:
    """Every top-level value of ``text`` with where it starts."""
    parser = _read(text, max_depth, max_size)
    forms = []
    while parser.ready():
        forms.append(parser.get_form())
    return forms


def parse_all(
    text: str | bytes, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE
) -> list[Value]:
    """Every top-level value of ``text``; ``[]`` for empty input."""
    values = _parse_fast(text, max_depth, max_size)
    if values is None:
        values = _parse_all_reference(text, max_depth, max_size)
    return values


def parse(text: str | bytes, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE) -> Value:
    """The first top-level value of ``text``; ParseError ``empty input`` if there is none."""
    values = _parse_fast(text, max_depth, max_size)
    if values:  # none: the state machine says where the empty input ends
        return values[0]
    return _parse_reference(text, max_depth, max_size)


def _parse_all_reference(
    text: str | bytes, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE
) -> list[Value]:
    """``parse_all`` by the state machine alone: the reference ``_parse_fast`` must match."""
    return [form.value for form in parse_forms(text, max_depth=max_depth, max_size=max_size)]


def _parse_reference(
    text: str | bytes, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE
) -> Value:
    """``parse`` by the state machine alone."""
    parser = _read(text, max_depth, max_size)
    if not parser.ready():
        raise ParseError("empty input", parser._line, parser._column)
    return parser.get_val()


# --- fast path for whole inputs (see _parse_fast) -------------------------------------

_WS = r"[ \t\n\v\f\r]"
_PLAIN = r"[$%&*+,\-./0-9:=?@A-Z^_`a-z|~]"  # ASCII graphic but !"#'();<>[]{} and backslash
_FAST_ESCAPE = (  # _ESCAPE, with \U only up to 0010FFFF
    r"""\\(?:[abtnvfr\\'"]|x[0-9a-fA-F]{2}|[0-3][0-7]{2}|u[0-9a-fA-F]{4}"""
    r"""|U(?:000[0-9a-fA-F]|0010)[0-9a-fA-F]{4})"""
)
_FAST_TOKEN = re.compile(
    rf"""(?:{_WS}++|\#[^\n]*+)*+  # whitespace and comments before the token
    (?: \((?P<leaf>{_WS}*+(?:{_PLAIN}++{_WS}*+)*+)\)
      | (?P<atom>{_PLAIN}++)(?=[ \t\n\v\f\r()\#]|\Z)
      | (?P<open>\()
      | (?P<close>\))
      | (?P<string>"[^"\\]*+(?:{_FAST_ESCAPE}[^"\\]*+)*+"|'[^'\\]*+(?:{_FAST_ESCAPE}[^'\\]*+)*+')
      | \Z
      | (?P<other>.)
    )""",
    re.VERBOSE | re.DOTALL,
)


def _parse_fast(text: str | bytes, max_depth: int, max_size: int) -> list[Value] | None:
    """Every top-level value of ``text``, or None if the state machine must read it.

    Why: the state machine (``Parser``) takes a few Python steps per character, ~200 ms
    for a 380 KB reply (1000 domain infos, ``xm list``); this takes a few per token. It
    reads what xend and its clients actually exchange (``show``'s output, configs) and
    the state machine stays the reference: this accepts only a subset of the syntax,
    where the rules are plain, and gives up on anything else, errors and limits
    included, so that ``parse``/``parse_all`` then read the whole input again with the
    state machine, which gives the result or the error with its line and column. The
    tests check that both agree on arbitrary input.

    Accepted: the six whitespace characters, comments, ``(`` and ``)``; atoms made only
    of ASCII graphic characters with no meaning in SXP, followed by whitespace, ``(``,
    ``)``, ``#`` or the end (separators, quotes, backslashes, control and non-ASCII
    characters in or right after an atom are left to the state machine); strings in
    either quote in which every backslash starts a valid escape, decoded by the state
    machine's own ``_ESCAPE`` and ``_unescape``. A list of such atoms alone,
    ``(memory 64)``, the commonest thing in a reply, is one match and a ``str.split``:
    the atoms hold none of the characters ``split`` breaks at.
    """
    if not isinstance(text, str | bytes) or len(text) > max_size:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            return None
    values: list[Value] = []
    current = values
    enclosing: list[list[Value]] = []  # the open lists around ``current``, outermost first
    for match in _FAST_TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "leaf":
            if len(enclosing) >= max_depth:
                return None
            current.append(match["leaf"].split())
        elif kind == "atom":
            current.append(match["atom"])
        elif kind == "open":
            if len(enclosing) >= max_depth:
                return None
            opened: list[Value] = []
            current.append(opened)
            enclosing.append(current)
            current = opened
        elif kind == "close":
            if not enclosing:
                return None
            current = enclosing.pop()
        elif kind == "string":
            string = match["string"][1:-1]
            if "\\" in string:
                string = _ESCAPE.sub(_unescape_match, string)
            current.append(string)
        elif kind == "other":
            return None
        else:  # the end
            break
    return None if enclosing else values


def _unescape_match(escape: re.Match[str]) -> str:
    char = _unescape(escape.group())
    assert char is not None  # _FAST_ESCAPE admits only escapes in range
    return char


# --- printers -------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9._:/~-]+|@")


def show(value: object) -> str:
    """``value`` on one line: lists in parentheses, strings bare or quoted (facts §1.3).

    Also prints what the original printed: tuples as lists, ints and bools bare,
    floats with 12 significant digits, anything else (None) as its quoted ``str``.
    """
    if type(value) is list:
        return _show_list(value)
    return _show_reference(value)


def _show_list(value: list) -> str:
    """``show`` of a list, quicker for plain ``str`` and ``list`` items; every other item
    goes to ``_show_reference``, which this must match byte for byte."""
    items = []
    for item in value:
        if type(item) is str:
            # isalnum alone would let non-ASCII letters in; most atoms are words or numbers.
            if not (item.isascii() and item.isalnum()) and not _BARE.fullmatch(item):
                item = repr(item)
        elif type(item) is list:
            item = _show_list(item)
        else:
            item = _show_reference(item)
        items.append(item)
    return "(" + " ".join(items) + ")"


def _show_reference(value: object) -> str:
    """``show`` as specified, item by item: the reference ``_show_list`` must match."""
    parts: list[str] = []
    _show(value, parts)
    return "".join(parts)


def _show(value: object, parts: list[str]) -> None:
    if isinstance(value, list | tuple):
        parts.append("(")
        for k, item in enumerate(value):
            if k:
                parts.append(" ")
            _show(item, parts)
        parts.append(")")
    else:
        parts.append(_show_atom(value))


def _show_atom(value: object) -> str:
    if isinstance(value, str):
        text = str.__str__(value)  # a str enum prints as its value
        return text if _BARE.fullmatch(text) else repr(text)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Python 2's str(float), which the original printed.
        text = f"{value:.12g}"
        return text + ".0" if text.lstrip("-").isdigit() else text
    return repr(str(value))


def pretty(value: object, width: int = 80) -> str:
    """``value`` broken over lines to fit ``width``, with a trailing newline (facts §1.5).

    A list that fits in what is left of the line prints on it; otherwise its first
    item follows the ``(``, every other item goes on its own line indented 4 more
    than the ``(``, and the ``)`` on its own line under the ``(``.
    """
    parts: list[str] = []
    _pretty(value, 0, width, parts)
    parts.append("\n")
    return "".join(parts)


def _pretty(value: object, column: int, width: int, parts: list[str]) -> None:
    flat = show(value)
    if not isinstance(value, list | tuple) or column + len(flat) <= width:
        parts.append(flat)
        return
    parts.append("(")
    for k, item in enumerate(value):
        if k:
            parts.append("\n" + " " * (column + 4))
            _pretty(item, column + 4, width, parts)
        else:
            _pretty(item, column + 1, width, parts)
    parts.append("\n" + " " * column + ")")


# --- element helpers (facts §1.4) -----------------------------------------------------

def _is_element(x: object, elt: str | None = None) -> TypeIs[list[Any] | tuple[Any, ...]]:
    """True if ``x`` is a non-empty list, named ``elt`` if given."""
    return isinstance(x, list | tuple) and len(x) > 0 and (elt is None or x[0] == elt)


def _first_child(x: list | tuple) -> int:
    """Where the children of element ``x`` start: after its name and attribute list."""
    return 2 if len(x) > 1 and _is_element(x[1], "@") else 1


def name(x: object) -> str | None:
    """The element name of ``x``; a string is its own name; None for anything else."""
    if isinstance(x, str):
        return x
    if _is_element(x):
        return x[0]
    return None


def attributes(x: object) -> list[Value]:
    """The ``(key value)`` pairs of the ``(@ ...)`` list that is the second item of ``x``."""
    if _is_element(x) and _first_child(x) == 2:
        return list(x[1][1:])
    return []


def attribute(x: object, key: str, default: Any = None) -> Any:
    """The value of attribute ``key`` of ``x``, else ``default``."""
    for pair in attributes(x):
        if _is_element(pair) and len(pair) > 1 and pair[0] == key:
            return pair[1]
    return default


def children(x: object, elt: str | None = None) -> list[Value]:
    """The items of ``x`` after its name and attributes; only elements named ``elt`` if given."""
    kids = list(x[_first_child(x) :]) if _is_element(x) else []
    if elt is not None:
        kids = [kid for kid in kids if _is_element(kid, elt)]
    return kids


def child(x: object, elt: str, default: Any = None) -> Any:
    """The first child element of ``x`` named ``elt``, else ``default``."""
    return next((kid for kid in children(x) if _is_element(kid, elt)), default)


def child_at(x: object, index: int, default: Any = None) -> Any:
    """The child of ``x`` at ``index`` (0-based), else ``default``."""
    kids = children(x)
    return kids[index] if 0 <= index < len(kids) else default


def child0(x: object, default: Any = None) -> Any:
    return child_at(x, 0, default)


def child1(x: object, default: Any = None) -> Any:
    return child_at(x, 1, default)


def child2(x: object, default: Any = None) -> Any:
    return child_at(x, 2, default)


def child3(x: object, default: Any = None) -> Any:
    return child_at(x, 3, default)


def child4(x: object, default: Any = None) -> Any:
    return child_at(x, 4, default)


def child_value(x: object, elt: str, default: Any = None) -> Any:
    """The first item of the first child named ``elt``: ``child_value(vm, 'memory')`` → '64'."""
    kid = child(x, elt)
    return default if kid is None else child_at(kid, 0, default)


def has_id(x: object, id: str) -> bool:
    """True if ``x`` has the attribute ``(id <id>)``."""
    return attribute(x, "id") == id


def with_id(x: object, id: str, default: Any = None) -> Any:
    """The first item at any depth of ``x`` (depth-first) that has the given id."""
    if isinstance(x, list | tuple):
        for item in x:
            if has_id(item, id):
                return item
            found = with_id(item, id)
            if found is not None:
                return found
    return default


def child_with_id(x: object, id: str, default: Any = None) -> Any:
    """The first item of ``x`` that has the given id."""
    if isinstance(x, list | tuple):
        return next((item for item in x if has_id(item, id)), default)
    return default


def merge(s1: Any, s2: Any) -> Any:
    """Merge ``s1`` and ``s2`` recursively; where both have a value, ``s1``'s wins.

    Children of the same name are merged pairwise by position, extras kept. The
    result lists s1's child names in order, then those only s2 has, then s1's
    non-element items. Unlike the original, s1's attribute list is kept.
    """
    if s1 is None:
        return s2
    if s2 is None or not _is_element(s1):
        return s1
    named1, values1 = _child_map(s1)
    named2, _ = _child_map(s2)
    merged: list[Value] = list(s1[: _first_child(s1)])
    for key, kids1 in named1.items():
        kids2 = named2.get(key, [])
        merged.extend(merge(a, b) for a, b in zip(kids1, kids2, strict=False))
        merged.extend(kids1[len(kids2) :] or kids2[len(kids1) :])
    for key, kids2 in named2.items():
        if key not in named1:
            merged.extend(kids2)
    merged.extend(values1)
    return merged


def _child_map(x: object) -> tuple[dict[str, list[Value]], list[Value]]:
    """The child elements of ``x`` grouped by name, and its other children."""
    named: dict[str, list[Value]] = {}
    values: list[Value] = []
    for kid in children(x):
        if _is_element(kid) and isinstance(kid[0], str):
            named.setdefault(kid[0], []).append(kid)
        else:
            values.append(kid)
    return named, values
