"""The xfr message vocabulary and its channel: what goes on the wire, what is refused,
and the limits on everything read (transfer/xfr/); the migration sender's batches."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from xend_actors import sxp
from xend_actors.transfer import xfr
from xend_actors.transfer.pages import Throttle, _batches

INFO = ["domain", ["id", "5"], ["name", "web 1"],
        ["config", ["vm", ["name", "web 1"], ["memory", "32"]]]]


@pytest.fixture
def pair() -> Iterator[tuple[xfr.Channel, xfr.Channel]]:
    a, b = socket.socketpair()
    left, right = xfr.Channel(a, "left", 2.0), xfr.Channel(b, "right", 0.5)
    yield left, right
    left.close()
    right.close()


@pytest.mark.parametrize(("message", "text"), [
    (xfr.Hello(), "(xfr.hello 1 0)"),
    (xfr.OK, "(xfr.err 0)"),
    (xfr.Err(xfr.Code.EEXIST, "vm name clash: web1"), "(xfr.err 17 'vm name clash: web1')"),
    (xfr.Pages(256, 16), "(xfr.pages 256 16)"),
    (xfr.State(10, "ab" * 32), f"(xfr.state 10 {'ab' * 32})"),
    (xfr.XfrOk(7), "(xfr.xfr.ok 7)"),
])
def test_messages_print_as_the_original_and_read_back(message: xfr.Message, text: str) -> None:
    assert xfr.encode(message).decode() == text
    assert xfr.from_sxp(sxp.parse(text)) == message


def test_the_offer_carries_the_domain_info_as_a_string() -> None:
    offer = xfr.Xfr(5, INFO, 32 << 20, True)
    value = sxp.parse(xfr.encode(offer))
    assert value[:2] == ["xfr.xfr", "5"] and isinstance(value[2], str)
    assert sxp.parse(value[2]) == INFO
    assert xfr.from_sxp(value) == offer


@pytest.mark.parametrize("text", [
    "(xfr.bogus 1)",  # unknown name
    "(xfr.hello 1)",  # too few
    "(xfr.hello 1 0 2)",  # too many
    "(xfr.hello one 0)",  # not a number
    "(xfr.hello -1 0)",
    "(xfr.err 123456789012345678901234)",  # absurdly long number
    "(xfr.pages 0 0)",  # an empty batch
    f"(xfr.pages 0 {xfr.MAX_BATCH + 1})",  # too big a batch
    f"(xfr.state {xfr.MAX_STATE + 1} {'0' * 64})",  # too big a state
    "(xfr.state 10 nothex)",
    "(xfr.xfr 5 '(vm (name x))' 4096 1)",  # info that is no (domain ...)
    "(xfr.xfr 5 '(domain' 4096 1)",  # info that does not parse
    "(xfr.xfr 5 '(domain)' 4096 2)",  # live is 0 or 1
    "(xfr.hello (1) 0)",  # nested where atoms go
    "xfr.hello",  # not a list
])
def test_bad_messages_are_refused_as_protocol_errors(text: str) -> None:
    with pytest.raises(xfr.XfrError) as caught:
        xfr.from_sxp(sxp.parse(text))
    assert caught.value.code == xfr.Code.EPROTO


def test_a_reason_is_cut_to_its_limit() -> None:
    message = xfr.from_sxp(["xfr.err", "5", "x" * 5000])
    assert isinstance(message, xfr.Err) and len(message.reason) == xfr.MAX_REASON


def test_a_channel_carries_messages_and_the_raw_bytes_after_them(
        pair: tuple[xfr.Channel, xfr.Channel]) -> None:
    left, right = pair
    pages = bytes(range(256)) * 32  # two pages
    left.send(xfr.Xfr(5, INFO, 8192, False))
    left.send(xfr.Pages(0, 2))
    left.send_bytes(pages)
    left.send(xfr.OK)
    assert right.receive() == xfr.Xfr(5, INFO, 8192, False)
    assert right.receive() == xfr.Pages(0, 2)
    assert right.receive_bytes(len(pages)) == pages
    right.expect_ok("the test")


def test_parens_and_utf8_inside_a_message_do_not_end_it_early(
        pair: tuple[xfr.Channel, xfr.Channel]) -> None:
    left, right = pair
    info = ["domain", ["name", "café) (x"], ["memory", "8"]]
    left.send_bytes(xfr.encode(xfr.Xfr(5, info, 8192, False)) + xfr.encode(xfr.Data(5))
                    + b")raw)")
    assert right.receive() == xfr.Xfr(5, info, 8192, False)
    assert right.receive() == xfr.Data(5)
    assert right.receive_bytes(5) == b")raw)"


def test_a_refusal_names_the_peer_and_its_reason(
        pair: tuple[xfr.Channel, xfr.Channel]) -> None:
    left, right = pair
    left.send(xfr.Err(xfr.Code.EACCES, "10.0.0.9 is not allowed"))
    with pytest.raises(xfr.XfrError) as caught:
        right.expect_ok("the connection")
    assert caught.value.code == xfr.Code.EACCES and caught.value.status == 403
    assert caught.value.message == "right refused the connection: 10.0.0.9 is not allowed"


def test_a_closed_or_silent_or_garbling_peer_is_an_error(
        pair: tuple[xfr.Channel, xfr.Channel]) -> None:
    left, right = pair
    with pytest.raises(xfr.XfrError, match=r"sent nothing for 0\.5 s") as caught:
        right.receive()
    assert caught.value.code == xfr.Code.ETIMEDOUT
    left.send_bytes(b")")
    with pytest.raises(xfr.XfrError, match="bad message"):
        right.receive()
    left.close()
    right2 = xfr.Channel(right.sock, "right", 0.5)
    with pytest.raises(xfr.XfrError, match="closed the connection"):
        right2.receive()


def test_a_message_larger_than_the_limit_is_refused_before_it_ends(
        pair: tuple[xfr.Channel, xfr.Channel]) -> None:
    left, right = pair
    endless = threading.Thread(target=lambda: _send_quietly(
        left, b"(xfr.xfr 5 '" + b"x" * (xfr.MAX_MESSAGE + 10)), daemon=True)
    endless.start()
    right.timeout = 5.0
    right.sock.settimeout(5.0)
    with pytest.raises(xfr.XfrError, match="larger than"):
        right.receive()
    right.close()
    endless.join(timeout=10)


def _send_quietly(channel: xfr.Channel, data: bytes) -> None:
    with contextlib.suppress(xfr.XfrError):
        channel.send_bytes(data)


@pytest.mark.parametrize(("text", "where"), [
    ("10.0.0.2", ("10.0.0.2", 8002)),
    ("host.example:9002", ("host.example", 9002)),
    ("[fd00::2]:9002", ("fd00::2", 9002)),
    ("[fd00::2]", ("fd00::2", 8002)),
    ("fd00::2", ("fd00::2", 8002)),  # two colons: an IPv6 address without a port
])
def test_destinations(text: str, where: tuple[str, int]) -> None:
    assert xfr.parse_destination(text) == where


@pytest.mark.parametrize("text", ["", ":8002", "h:x", "h:0", "h:70000", "[fd00::2]x"])
def test_bad_destinations(text: str) -> None:
    with pytest.raises(xfr.XfrError) as caught:
        xfr.parse_destination(text)
    assert caught.value.status == 400


def test_the_throttle_keeps_to_its_rate() -> None:
    throttle = Throttle(8)  # 1 MB/s
    start = time.monotonic()
    for _ in range(4):
        throttle.sent(50_000)
    assert 0.19 < time.monotonic() - start < 1.0
    unlimited = Throttle(0)
    start = time.monotonic()
    unlimited.sent(1 << 30)
    assert time.monotonic() - start < 0.1


def test_pages_go_in_runs_of_at_most_a_batch() -> None:
    assert list(_batches([])) == []
    assert list(_batches([1, 2, 3, 7, 9, 10])) == [(1, 3), (7, 1), (9, 2)]
    assert list(_batches(range(xfr.MAX_BATCH + 5))) == [(0, xfr.MAX_BATCH),
                                                        (xfr.MAX_BATCH, 5)]


def test_an_offer_names_its_driver_and_a_stream_goes_in_pieces() -> None:
    offer = xfr.Xfr(5, INFO, 32 << 20, True, "qemu", b'{"memory_mb": 32}')
    assert xfr.from_sxp(sxp.parse(xfr.encode(offer))) == offer
    old = xfr.from_sxp(sxp.parse(xfr.encode(offer))[:5])  # an offer without them is a sim's
    assert isinstance(old, xfr.Xfr) and (old.kind, old.meta) == ("sim", b"")
    assert xfr.from_sxp(sxp.parse("(xfr.data 4096)")) == xfr.Data(4096)
    for text in (f"(xfr.data {xfr.MAX_DATA + 1})", "(xfr.xfr 5 '(domain)' 4096 1 'q m' '')"):
        with pytest.raises(xfr.XfrError):
            xfr.from_sxp(sxp.parse(text))


def test_a_channel_copies_a_piece_of_a_stream_into_a_pipe(
        pair: tuple[xfr.Channel, xfr.Channel]) -> None:
    left, right = pair
    data = bytes(range(256)) * 1024
    read, write = xfr.open_pipe(xend_writes=True)
    sender = threading.Thread(target=lambda: (left.send(xfr.Data(len(data))),
                                              left.send_bytes(data)))
    sender.start()
    try:
        right.timeout = 2.0
        right.sock.settimeout(2.0)
        assert right.receive() == xfr.Data(len(data))
        copied = threading.Thread(target=right.receive_into, args=(write, len(data)))
        copied.start()
        got = b""
        while len(got) < len(data):
            got += os.read(read, 1 << 20)
        copied.join(timeout=5)
        sender.join(timeout=5)
        assert got == data
    finally:
        os.close(read)
        os.close(write)
