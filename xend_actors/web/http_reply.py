"""A reply's bytes: its head and its body's framing, as h11 writes them, without h11.

h11 reads the requests (``http_connection``); sending a reply through its state machine
cost a kept-alive request more than a quarter of its CPU (issue 16), so the reply is
written here by h11's own rules (RFC 9112 §6.3, §9.6), to the byte: a reply to a HEAD
or a 204/304 has no body; one without a ``Content-Length`` is chunked to an HTTP/1.1
client and delimited by the close to an HTTP/1.0 one; a ``Connection: close`` is
added whenever the connection ends after it (an HTTP/1.0 client, a request or a reply
that says close, a close-delimited body), and ``keep`` says whether it does. What h11
refuses to send is refused here too (``h11.LocalProtocolError``): a header that is not
one, a ``Content-Length`` that is not one number, a body longer or shorter than it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import h11

# h11's grammar (its _abnf): a name is a token (RFC 9110 §5.1); a value, words of any
# byte but NUL and white space, one space or tab or more between them; so is a reason.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_REASON = re.compile(rb"(?:[ \t]|[^\x00\s])*")

Header = tuple[bytes, bytes, bytes]  # its name as given, lowercased, and its value


def comma_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The comma-separated values of the ``name`` headers among ``headers`` (lowercased
    names), lowercased (h11's rule)."""
    return [part.strip().lower() for found, value in headers if found == name
            for part in value.split(b",") if part.strip()]


def _keeps(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return b"close" not in comma_values(headers, b"connection")


@dataclass
class Framing:
    """What is left to write of the reply's body: ``left`` bytes of a length, or chunks,
    or bytes until the close."""

    left: int | None  # bytes the Content-Length still promises (None: no length)
    chunked: bool

    def body(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self.left is not None:
            self.left -= len(data)
            if self.left < 0:
                raise h11.LocalProtocolError("Too much data for declared Content-Length")
            return data
        return b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data

    def end(self) -> bytes:
        if self.left:
            raise h11.LocalProtocolError("Too little data for declared Content-Length")
        return b"0\r\n\r\n" if self.chunked else b""


def head(request: h11.Request, status: int, reason: bytes,
         raw_headers: list[tuple[bytes, bytes]]) -> tuple[bytes, Framing, bool]:
    """The reply's head to ``request``, how its body is framed, and whether the
    connection carries another request after it."""
    if not 200 <= status <= 999 or not _REASON.fullmatch(reason):
        raise h11.LocalProtocolError(f"not a reply's status line: {status} {reason!r}")
    headers: list[Header] = []
    length = None
    for name, value in raw_headers:
        if not _TOKEN.fullmatch(name):
            raise h11.LocalProtocolError(f"Illegal header name {name!r}")
        if not _VALUE.fullmatch(value):
            raise h11.LocalProtocolError(f"Illegal header value {value!r}")
        lowered = name.lower()
        if lowered == b"content-length":
            lengths = {part.strip() for part in value.split(b",")}
            value = lengths.pop()
            if lengths or not value.isdigit() or len(value) > 20 or \
                    length not in (None, value):
                raise h11.LocalProtocolError("bad Content-Length")
            if length is not None:
                continue
            length = value
        elif lowered == b"transfer-encoding":
            if value.lower() != b"chunked" or any(
                    found == lowered for _, found, _ in headers):
                raise h11.LocalProtocolError("Only Transfer-Encoding: chunked is supported")
            value = b"chunked"
        headers.append((name, lowered, value))
    http11 = request.http_version >= b"1.1"
    keep = http11 and _keeps(request.headers)  # its names come lowercased
    tunnel = request.method == b"CONNECT" and status < 300  # h11 hands such one over
    if status in (204, 304) or tunnel:
        framing = Framing(0, chunked=False)
    else:
        chunked = any(found == b"transfer-encoding" for _, found, _ in headers)
        if not chunked and length is not None:
            framing = Framing(int(length), chunked=False)
        else:  # no length: chunks to HTTP/1.1, bytes until the close to HTTP/1.0
            headers = [header for header in headers
                       if header[1] not in (b"content-length", b"transfer-encoding")]
            if http11:
                headers.append((b"Transfer-Encoding", b"transfer-encoding", b"chunked"))
            elif request.method != b"HEAD":
                keep = False
            framing = Framing(None, chunked=http11)
    if request.method == b"HEAD":
        framing = Framing(0, chunked=False)
    keep = keep and _keeps((name, value) for _, name, value in headers)
    if not keep:
        tokens = set(comma_values(((name, value) for _, name, value in headers),
                                  b"connection"))
        tokens.discard(b"keep-alive")
        tokens.add(b"close")
        headers = [header for header in headers if header[1] != b"connection"]
        headers += [(b"Connection", b"connection", token) for token in sorted(tokens)]
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines += [b"%s: %s\r\n" % (raw, value) for raw, name, value in headers if name == b"host"]
    lines += [b"%s: %s\r\n" % (raw, value) for raw, name, value in headers if name != b"host"]
    lines.append(b"\r\n")
    return b"".join(lines), framing, keep and not tunnel
