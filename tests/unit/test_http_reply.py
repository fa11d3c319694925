"""xend's replies are h11's to the byte (``web/http_reply.py``): h11 itself is the judge.

Each case is a request (method, version, its Connection header) and a reply (status,
headers, body in pieces); h11 reads the request and writes the reply through its state
machine, ``http_reply`` writes it alone: the same bytes, the same keep-alive, the same
refusals.
"""

from __future__ import annotations

import itertools

import h11
import pytest

from xend_actors.web import http_reply

Headers = list[tuple[bytes, bytes]]


def _request(method: bytes, version: bytes, connection: bytes | None) -> bytes:
    lines = [b"%s /xend/ HTTP/%s" % (method, version), b"Host: xend"]
    if connection is not None:
        lines.append(b"Connection: " + connection)
        if b"Upgrade" in connection:  # a WebSocket's: answered without taking it up
            lines.append(b"Upgrade: websocket")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _by_h11(raw: bytes, status: int, headers: Headers, body: list[bytes]
            ) -> tuple[bytes, bool] | str:
    """h11's bytes for the reply and whether it keeps the connection; or its refusal."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    assert isinstance(connection.next_event(), h11.Request)
    assert isinstance(connection.next_event(), h11.EndOfMessage)
    proposed = connection.their_state is h11.MIGHT_SWITCH_PROTOCOL
    try:
        sent = connection.send(h11.Response(status_code=status, reason=b"OK",
                                            headers=headers)) or b""
        for data in body:
            sent += connection.send(h11.Data(data=data)) or b""
        sent += connection.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return "refused"
    # kept: both done; an Upgrade proposed and not taken up leaves the client done too
    assert not proposed or connection.their_state in (h11.DONE, h11.MUST_CLOSE)
    return sent, connection.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}


def _by_xend(raw: bytes, status: int, headers: Headers, body: list[bytes]
             ) -> tuple[bytes, bool] | str:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    request = connection.next_event()
    assert isinstance(request, h11.Request)
    try:
        sent, framing, keep = http_reply.head(request, status, b"OK", headers)
        for data in body:
            sent += framing.body(data)
        sent += framing.end()
    except h11.LocalProtocolError:
        return "refused"
    return sent, keep


REQUESTS = [_request(method, version, connection) for method, version, connection in
            itertools.product((b"GET", b"HEAD", b"POST"), (b"1.0", b"1.1"),
                              (None, b"close", b"keep-alive", b"Keep-Alive, Upgrade"))]
REPLIES: list[tuple[int, Headers, list[bytes]]] = [
    (200, [(b"Content-Type", b"application/sxp"), (b"Content-Length", b"5")], [b"(ls)\n"]),
    (200, [(b"Content-Type", b"text/plain")], [b"one", b"", b"two"]),  # no length
    (200, [(b"Content-Length", b"5")], [b"(l", b"s)\n"]),
    (200, [(b"Content-Length", b"5, 5"), (b"content-length", b"5")], [b"(ls)\n"]),
    (200, [(b"Content-Length", b"0")], []),
    (404, [(b"Content-Length", b"3"), (b"Connection", b"close")], [b"no\n"]),
    (503, [(b"Connection", b"Keep-Alive, Foo"), (b"Content-Length", b"0")], []),
    (200, [(b"Transfer-Encoding", b"Chunked")], [b"abc"]),
    (204, [(b"X-Thing", b"a  b\tc")], []),
    (304, [(b"Content-Length", b"9")], []),
    (303, [(b"Location", b"/xend/login?next=/xend/"), (b"Content-Length", b"0")], []),
    # what h11 refuses to send
    (200, [(b"Content-Length", b"5")], [b"(ls)\n!"]),
    (200, [(b"Content-Length", b"5")], [b"(ls"]),
    (200, [(b"Content-Length", b"5, 6")], [b"(ls)\n"]),
    (200, [(b"Content-Length", b"-1")], []),
    (200, [(b"Transfer-Encoding", b"gzip")], [b"x"]),
    (200, [(b"Bad Name", b"x"), (b"Content-Length", b"0")], []),
    (200, [(b"X-Injected", b"a\r\nSet-Cookie: b"), (b"Content-Length", b"0")], []),
    (200, [(b"X-Nul", b"a\x00b"), (b"Content-Length", b"0")], []),
    (200, [(b"X-Trailing", b"a "), (b"Content-Length", b"0")], []),
]


@pytest.mark.parametrize("raw", REQUESTS, ids=lambda raw: raw.split(b"\r\nHost")[0].decode()
                         + raw.partition(b"Connection: ")[2].strip().decode())
@pytest.mark.parametrize(("status", "headers", "body"), REPLIES)
def test_a_reply_is_written_as_h11_writes_it(raw: bytes, status: int, headers: Headers,
                                              body: list[bytes]) -> None:
    expected = _by_h11(raw, status, headers, body)
    got = _by_xend(raw, status, headers, body)
    assert got == expected


def test_a_reply_to_a_connect_tunnel_is_not_kept() -> None:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"CONNECT xend:80 HTTP/1.1\r\nHost: xend:80\r\n\r\n")
    request = connection.next_event()
    assert isinstance(request, h11.Request)
    head, framing, keep = http_reply.head(request, 200, b"OK", [])
    assert head == b"HTTP/1.1 200 OK\r\n\r\n" and framing.end() == b"" and not keep
