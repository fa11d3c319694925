"""The xfr decoder, apart from any socket (transfer/xfr/decoder.py): bytes fed in pieces
of any size come out as the same messages and raw bytes; everything it holds is bounded;
the protocol's modules do no I/O."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from xend_actors import sxp
from xend_actors.transfer import xfr
from xend_actors.transfer.xfr import decoder, messages

INFO = ["domain", ["id", "5"], ["name", "café) (x"],
        ["config", ["vm", ["name", "café) (x"], ["memory", "8"]]]]
PAGES = bytes(range(256)) * 16 + b")(" * 2048  # two pages, parens among them
STATE = b"(xfr.err 0)" * 10  # raw bytes that read like a message
DATA = b")raw)"

# (message, the raw bytes after it) as a source and a destination exchange them
CONVERSATION: list[tuple[xfr.Message, bytes]] = [
    (xfr.Hello(), b""),
    (xfr.Xfr(5, INFO, 8192, True, "sim", b""), b""),
    (xfr.Pages(0, 2), PAGES),
    (xfr.State(len(STATE), hashlib.sha256(PAGES).hexdigest()), STATE),
    (xfr.Data(len(DATA)), DATA),
    (xfr.Data(0), b""),
    (xfr.XfrOk(7), b""),
    (xfr.Err(xfr.Code.EEXIST, "vm name clash: x"), b""),
    (xfr.OK, b""),
]
WIRE = b"".join(xfr.encode(message) + raw for message, raw in CONVERSATION)


def decode(pieces: list[bytes]) -> list[tuple[xfr.Message, bytes]]:
    """Feed ``pieces`` one at a time, taking every message and its raw bytes."""
    got: list[tuple[xfr.Message, bytes]] = []
    wire = xfr.Decoder()
    for piece in pieces:
        wire.feed(piece)
        while True:
            if wire.owed:
                raw = wire.take(wire.owed)
                got[-1] = (got[-1][0], got[-1][1] + raw)
                if wire.owed:
                    break  # the rest of the raw bytes is in a later piece
            message = wire.next()
            if message is None:
                break
            got.append((message, b""))
    assert wire.owed == 0 and wire.buffered == 0
    return got


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4095, 4097, len(WIRE)])
def test_a_conversation_fed_in_pieces_of_any_size_decodes_the_same(size: int) -> None:
    pieces = [WIRE[at:at + size] for at in range(0, len(WIRE), size)]
    assert decode(pieces) == CONVERSATION


def test_raw_bytes_announced_are_owed_until_taken_or_skipped() -> None:
    wire = xfr.Decoder()
    wire.feed(xfr.encode(xfr.Pages(3, 1)) + b"x" * 100)
    assert wire.next() == xfr.Pages(3, 1)
    assert wire.owed == xfr.PAGE_SIZE and wire.buffered == 100
    with pytest.raises(RuntimeError, match="owed"):
        wire.next()  # the page comes first
    with pytest.raises(RuntimeError, match="cannot skip"):
        wire.skip(10)  # bytes fed are taken before any goes past the decoder
    assert wire.take(60) == b"x" * 60
    assert wire.take(1 << 20) == b"x" * 40  # what was fed, no more
    assert wire.take(1 << 20) == b""
    with pytest.raises(RuntimeError, match="cannot skip"):
        wire.skip(xfr.PAGE_SIZE)  # more than is owed
    wire.skip(xfr.PAGE_SIZE - 100)  # moved from the socket by the caller (splice)
    assert wire.owed == 0
    wire.feed(xfr.encode(xfr.OK))
    assert wire.next() == xfr.OK


def test_only_pages_state_and_data_announce_raw_bytes() -> None:
    assert [xfr.raw_size(message) for message, _raw in CONVERSATION] == [
        0, 0, 2 * xfr.PAGE_SIZE, len(STATE), len(DATA), 0, 0, 0, 0]


def test_an_endless_message_is_refused_once_past_the_limit_holding_little() -> None:
    wire = xfr.Decoder()
    wire.feed(b"(xfr.xfr 5 '")
    assert wire.next() is None
    fed = 0
    with pytest.raises(sxp.ParseError, match="larger than"):
        while True:
            wire.feed(b"x" * 65536)
            fed += 65536
            assert wire.next() is None
            assert wire.buffered == 0  # all of it went to the parser
    assert xfr.MAX_MESSAGE - 65536 < fed <= xfr.MAX_MESSAGE + 65536


@pytest.mark.parametrize("text", [
    f"(xfr.pages 0 {xfr.MAX_BATCH + 1})",
    f"(xfr.state {xfr.MAX_STATE + 1} {'0' * 64})",
    f"(xfr.data {xfr.MAX_DATA + 1})",
])
def test_a_message_announcing_too_many_raw_bytes_is_refused_before_they_come(
        text: str) -> None:
    wire = xfr.Decoder()
    wire.feed(text.encode())
    with pytest.raises(xfr.XfrError) as caught:
        wire.next()
    assert caught.value.code == xfr.Code.EPROTO
    assert wire.owed == 0


def test_bytes_that_are_no_sxp_or_no_message_are_refused() -> None:
    wire = xfr.Decoder()
    wire.feed(b")")
    with pytest.raises(sxp.ParseError):
        wire.next()
    wire = xfr.Decoder()
    wire.feed(b"(xfr.bogus 1)")
    with pytest.raises(xfr.XfrError, match="unknown xfr message"):
        wire.next()


IO_MODULES = {"socket", "select", "selectors", "os", "fcntl", "termios", "threading",
              "time", "asyncio", "subprocess"}


@pytest.mark.parametrize("module", [messages, decoder], ids=lambda m: m.__name__)
def test_the_protocol_does_no_io(module: object) -> None:
    path = Path(str(getattr(module, "__file__", "")))
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not imported & IO_MODULES
    assert not {name for name in imported
                if name.startswith("xend_actors.transfer.xfr.")} - {
        "xend_actors.transfer.xfr.messages"}
