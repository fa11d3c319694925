"""The xfr message vocabulary between two xends migrating a domain (facts §10.1, §10.2).

A connection carries SXP messages back to back; ``(xfr.pages ...)`` and
``(xfr.state ...)`` are followed by the raw bytes they announce. The conversation::

    source                                   destination (relocation port)
    (xfr.hello 1 0)                    →
                                       ←     (xfr.err 0)          or (xfr.err CODE 'why')
    (xfr.xfr DOMID 'INFO' BYTES LIVE KIND 'META')
                                       →     INFO: the domain info SXP, as a string
                                       ←     (xfr.err 0)          name, memory, kind checked
    (xfr.pages FIRST COUNT) + pages    →     as often as needed (pre-copy rounds)
    (xfr.state SIZE SHA256) + state    →     SHA256 over every page byte sent, in order
                                       ←     (xfr.xfr.ok NEWID)   built, configured, paused
    (xfr.err 0)                        →     the source domain is destroyed: commit
                                       ←     (xfr.err 0)          it runs

KIND names the source's driver (``sim`` when absent); a destination with another driver
refuses the offer. A driver whose state is a stream (qemu) sends no pages and no state:
META describes its machine, the destination makes it (devices configured) before it
answers the offer, and the state follows as ``(xfr.data SIZE)`` + SIZE bytes, as often
as needed, ended by ``(xfr.data 0)``; then ``(xfr.xfr.ok NEWID)`` and the commit as above.

Either side may send ``(xfr.err CODE 'why')`` instead and close; a destination whose
connection breaks before the commit destroys what it built. Every read is bounded:
a message by ``MAX_MESSAGE`` bytes, a batch of pages by ``MAX_BATCH`` pages, the
state by ``MAX_STATE`` bytes, a piece of a stream by ``MAX_DATA``, and every wait by
the channel's timeout.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import sys
import termios
import time
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
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


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


class XfrError(XendError):
    """A failed transfer: the peer said so with ``code``, or the stream broke."""

    def __init__(self, message: str, code: int = Code.EIO) -> None:
        super().__init__(message, status=_STATUS.get(code, 500))
        self.code = code


_STATUS = {Code.EACCES: 403, Code.EEXIST: 409, Code.EINVAL: 400, Code.ETIMEDOUT: 504}


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


class Channel:
    """One xfr connection: whole messages and raw bytes both ways, each read and write
    bounded by ``timeout`` seconds."""

    def __init__(self, sock: socket.socket, peer: str, timeout: float) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self._buffer = bytearray()
        sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def send(self, message: Message) -> None:
        self.send_bytes(encode(message))

    def send_bytes(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise XfrError(f"{self.peer} took no data for {self.timeout:g} s",
                           Code.ETIMEDOUT) from None
        except OSError as error:
            raise XfrError(f"lost the connection to {self.peer}: "
                           f"{error.strerror or error}") from None

    def receive(self) -> Message:
        """The next message."""
        parser = sxp.Parser(max_size=MAX_MESSAGE)
        try:
            while True:
                if not self._buffer:
                    self._fill()
                # A message is a list, so it can only end at a ")": feeding the parser up
                # to the next one leaves any raw bytes after the message in the buffer.
                end = self._buffer.find(b")") + 1 or len(self._buffer)
                parser.input(bytes(self._buffer[:end]))
                del self._buffer[:end]
                if parser.ready():
                    return from_sxp(parser.get_val())
        except sxp.ParseError as error:
            raise XfrError(f"{self.peer} sent a bad message: {error}", Code.EPROTO) from None

    def expect_ok(self, what: str) -> None:
        """Read a reply; XfrError carrying the peer's code and reason unless it is OK."""
        reply = self.receive()
        if isinstance(reply, Err) and reply.code == Code.OK:
            return
        if isinstance(reply, Err):
            raise XfrError(f"{self.peer} refused {what}: {reply.reason or f'error {reply.code}'}",
                           reply.code)
        raise XfrError(f"{self.peer} answered {what} with {type(reply).__name__}", Code.EPROTO)

    @property
    def buffered(self) -> int:
        """Bytes read from the socket that no message has taken yet."""
        return len(self._buffer)

    def receive_into(self, fd: int, size: int) -> None:
        """Copy the next ``size`` raw bytes into ``fd`` (a pipe), each wait bounded; the
        kernel moves them (splice), they never pass through xend's memory."""
        if self._buffer:
            take = min(size, len(self._buffer))
            write_all(fd, memoryview(self._buffer)[:take], self.timeout)
            del self._buffer[:take]
            size -= take
        while size:
            self._wait(self.sock, "r", f"{self.peer} sent nothing")
            self._wait(fd, "w", "the reader of the stream took nothing")
            try:
                moved = os.splice(self.sock.fileno(), fd, size, flags=SPLICE_FLAGS)
            except BlockingIOError:
                continue
            except OSError as error:
                raise XfrError(f"copying the stream from {self.peer} failed: "
                               f"{error.strerror or error}") from None
            if not moved:
                raise XfrError(f"{self.peer} closed the connection")
            size -= moved

    def send_pipe(self, read: int) -> None:
        """Send what comes out of the pipe ``read`` as ``(xfr.data SIZE)`` pieces until its
        writers close it (no end marker); the kernel moves the bytes (splice)."""
        while True:
            _ready(read, "r", None)  # the writer's pace: the caller bounds it
            size = min(int.from_bytes(fcntl.ioctl(read, termios.FIONREAD, bytes(4)),
                                      sys.byteorder), MAX_DATA)
            if not size:
                return  # readable and empty: every writer closed it
            self.send(Data(size))
            while size:
                try:
                    moved = os.splice(read, self.sock.fileno(), size, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    self._wait(self.sock, "w", f"{self.peer} took no data")
                    continue
                except OSError as error:
                    raise XfrError(f"lost the connection to {self.peer}: "
                                   f"{error.strerror or error}") from None
                size -= moved

    def _wait(self, what: socket.socket | int, how: str, sentence: str) -> None:
        if not _ready(what, how, self.timeout):
            raise XfrError(f"{sentence} for {self.timeout:g} s", Code.ETIMEDOUT)

    def receive_bytes(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            raise XfrError(f"{self.peer} sent nothing for {self.timeout:g} s",
                           Code.ETIMEDOUT) from None
        except OSError as error:
            raise XfrError(f"lost the connection to {self.peer}: "
                           f"{error.strerror or error}") from None
        if not chunk:
            raise XfrError(f"{self.peer} closed the connection")
        self._buffer += chunk


class Throttle:
    """Keeps a stream at most ``mbit`` Mbit/s (0: no limit) by waiting before a send
    that would run ahead of that rate."""

    def __init__(self, mbit: int) -> None:
        self.bytes_per_second = mbit * 1_000_000 / 8
        self._start = time.monotonic()
        self._sent = 0

    def sent(self, size: int) -> None:
        """``size`` more bytes went out; returns once the rate allows the next ones."""
        self._sent += size
        if self.bytes_per_second:
            ahead = self._sent / self.bytes_per_second - (time.monotonic() - self._start)
            if ahead > 0:
                time.sleep(ahead)


def open_pipe(xend_writes: bool) -> tuple[int, int]:
    """A pipe (read end, write end) with a buffer as large as the host allows, so a
    stream moves in big steps. When xend writes to it, its end does not block, so
    ``write_all`` keeps its deadline."""
    read, write = os.pipe2(os.O_CLOEXEC)
    if xend_writes:
        os.set_blocking(write, False)
    try:
        limit = int(open("/proc/sys/fs/pipe-max-size").read())  # noqa: SIM115
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, min(limit, MAX_DATA))
    except (OSError, ValueError):
        pass  # the default 64 KiB works, only slower
    return read, write


def write_all(fd: int, data: bytes | memoryview, timeout: float) -> None:
    """Write all of ``data`` to ``fd``, waiting at most ``timeout`` s for room each time;
    XfrError if the reader went away or took nothing for that long."""
    view = memoryview(data)
    while view:
        if not _ready(fd, "w", timeout):
            raise XfrError(f"the reader of the stream took nothing for {timeout:g} s",
                           Code.ETIMEDOUT)
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError as error:
            raise XfrError(f"the reader of the stream went away: "
                           f"{error.strerror or error}") from None
        view = view[written:]


def _ready(what: socket.socket | int, how: str, timeout: float | None) -> bool:
    """Whether ``what`` can be read (``how`` "r") or written ("w") within ``timeout`` s
    (None: however long it takes); an error or a hang-up counts as ready, for the next
    call to say what it is. poll, not select: xend may have fds past FD_SETSIZE."""
    poller = select.poll()
    poller.register(what, select.POLLIN if how == "r" else select.POLLOUT)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
