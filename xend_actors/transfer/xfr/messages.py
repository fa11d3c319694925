"""The xfr messages as values, and their SXP and bytes both ways: pure, no I/O.

Each message is a frozen dataclass; ``encode`` gives its bytes on the wire, ``from_sxp``
the message an SXP value is (refusing anything malformed or beyond the limits), and
``raw_size`` how many raw bytes follow it on the wire. Where the peer listens
(``parse_destination``) is here too: the protocol's port.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import IntEnum

from xend_actors import sxp
from xend_actors.errors import XendError

VERSION = (1, 0)
DEFAULT_PORT = 8002
PAGE_SIZE = 4096
MAX_MESSAGE = (1 << 20) + 4096  # a domain info SXP up to 1 MiB (as a save file holds)
MAX_BATCH = 256  # pages in one (xfr.pages ...)
MAX_STATE = 1 << 20
MAX_REASON = 1024
MAX_DATA = 1 << 20  # bytes in one (xfr.data ...)
MAX_KIND = 12


class Code(IntEnum):
    """The ``(xfr.err CODE)`` codes: errno numbers, 0 = OK (facts §10.1)."""

    OK = 0
    EIO = errno.EIO
    ENOMEM = errno.ENOMEM
    EACCES = errno.EACCES
    EEXIST = errno.EEXIST
    EINVAL = errno.EINVAL
    EPROTO = errno.EPROTO
    ETIMEDOUT = errno.ETIMEDOUT


_STATUS: dict[int, int] = {Code.EACCES: 403, Code.EEXIST: 409, Code.EINVAL: 400,
                           Code.ETIMEDOUT: 504}


class XfrError(XendError):
    """A failed transfer: the peer said so with ``code``, or the stream broke."""

    def __init__(self, message: str, code: int = Code.EIO) -> None:
        super().__init__(message, status=_STATUS.get(code, 500))
        self.code = code


@dataclass(frozen=True)
class Hello:
    major: int = VERSION[0]
    minor: int = VERSION[1]


@dataclass(frozen=True)
class Err:
    """A result: code 0 is OK; otherwise ``reason`` says why in words."""

    code: int
    reason: str = ""


@dataclass(frozen=True)
class Xfr:
    """The source offers a domain: its info SXP, its memory size and whether it runs on."""

    domid: int
    info: sxp.Value
    memory_bytes: int
    live: bool
    kind: str = "sim"
    meta: bytes = b""  # a stream driver's description of its machine (ASCII JSON)


@dataclass(frozen=True)
class Pages:
    """``count`` pages from page ``first`` follow, PAGE_SIZE bytes each."""

    first: int
    count: int


@dataclass(frozen=True)
class State:
    """The final hypervisor state of ``size`` bytes follows; ``digest`` is the SHA-256
    (hex) of every page byte sent before it."""

    size: int
    digest: str


@dataclass(frozen=True)
class XfrOk:
    newid: int


@dataclass(frozen=True)
class Data:
    """``size`` bytes of a stream driver's state follow; 0 ends the stream."""

    size: int


Message = Hello | Err | Xfr | Pages | State | XfrOk | Data
OK = Err(Code.OK)


def raw_size(message: Message) -> int:
    """How many raw bytes follow ``message`` on the wire before the next message."""
    match message:
        case Pages(_first, count):
            return count * PAGE_SIZE
        case State(size, _digest):
            return size
        case Data(size):
            return size
    return 0


def to_sxp(message: Message) -> sxp.Value:
    """The SXP form of ``message``."""
    match message:
        case Hello(major, minor):
            return ["xfr.hello", str(major), str(minor)]
        case Err(code, reason):
            return ["xfr.err", str(int(code)), *([reason] if reason else [])]
        case Xfr(domid, info, memory_bytes, live, kind, meta):
            return ["xfr.xfr", str(domid), sxp.show(info), str(memory_bytes), str(int(live)),
                    kind, meta.decode("ascii")]
        case Pages(first, count):
            return ["xfr.pages", str(first), str(count)]
        case State(size, digest):
            return ["xfr.state", str(size), digest]
        case XfrOk(newid):
            return ["xfr.xfr.ok", str(newid)]
        case Data(size):
            return ["xfr.data", str(size)]
    raise TypeError(f"not an xfr message: {message!r}")


def encode(message: Message) -> bytes:
    return sxp.show(to_sxp(message)).encode()


def from_sxp(value: sxp.Value) -> Message:
    """The message ``value`` is; XfrError (EPROTO) if it is none or malformed."""
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        raise XfrError(f"not an xfr message: {_clip(value)}", Code.EPROTO)
    name, args = value[0], value[1:]
    try:
        match name, args:
            case "xfr.hello", [major, minor]:
                return Hello(_int(major), _int(minor))
            case "xfr.err", [code]:
                return Err(_int(code))
            case "xfr.err", [code, reason]:
                return Err(_int(code), reason[:MAX_REASON])
            case "xfr.xfr", [domid, info, memory_bytes, live, *rest] if len(rest) in (0, 2):
                parsed = sxp.parse(info, max_size=MAX_MESSAGE)
                if sxp.name(parsed) != "domain":
                    raise ValueError("its info is not a (domain ...)")
                kind, meta = rest if rest else ("sim", "")
                if not (0 < len(kind) <= MAX_KIND and kind.isascii() and kind.isalnum()):
                    raise ValueError(f"{kind[:40]!r} is not a driver name")
                if not meta.isascii():
                    raise ValueError("its meta is not ASCII")
                return Xfr(_int(domid), parsed, _int(memory_bytes), _flag(live), kind,
                           meta.encode("ascii"))
            case "xfr.pages", [first, count]:
                pages = Pages(_int(first), _int(count))
                if not 0 < pages.count <= MAX_BATCH:
                    raise ValueError(f"a batch holds 1 to {MAX_BATCH} pages")
                return pages
            case "xfr.state", [size, digest]:
                state = State(_int(size), digest)
                if state.size > MAX_STATE:
                    raise ValueError(f"a state is at most {MAX_STATE} bytes")
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError("the digest is not a SHA-256 in hex")
                return state
            case "xfr.xfr.ok", [newid]:
                return XfrOk(_int(newid))
            case "xfr.data", [size]:
                data = Data(_int(size))
                if data.size > MAX_DATA:
                    raise ValueError(f"a piece of a stream is at most {MAX_DATA} bytes")
                return data
    except (ValueError, sxp.ParseError) as error:
        raise XfrError(f"bad {name} message: {error}", Code.EPROTO) from None
    raise XfrError(f"unknown xfr message: {_clip(value)}", Code.EPROTO)


def _int(text: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise ValueError(f"{text[:40]!r} is not a number")
    return int(text)


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"{text[:40]!r} is not 0 or 1")
    return text == "1"


def _clip(value: object) -> str:
    text = sxp.show(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_destination(destination: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (``[v6]:port`` for IPv6) as (host, port)."""
    host, port = destination.strip(), DEFAULT_PORT
    if host.startswith("["):
        inside, _, rest = host[1:].partition("]")
        host = inside
        if rest.startswith(":"):
            port = _port(rest[1:], destination)
        elif rest:
            raise XfrError(f"bad destination {destination!r}", Code.EINVAL)
    elif host.count(":") == 1:
        host, text = host.split(":")
        port = _port(text, destination)
    if not host:
        raise XfrError(f"bad destination {destination!r}: no host", Code.EINVAL)
    return host, port


def _port(text: str, destination: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise XfrError(f"bad destination {destination!r}: bad port {text!r}", Code.EINVAL)
    return int(text)
