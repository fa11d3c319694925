"""``Channel``: one xfr connection's I/O, each read and write bounded by a timeout.

It writes encoded messages and raw bytes to the socket and feeds what it reads to a
``Decoder`` (``decoder.py``), which says where each message ends; a stream's pieces come
from the socket into a pipe by ``splice`` on plain TCP (through OpenSSL's reads over
TLS: ``tls.py``) and go from a pipe onto the socket through a buffer (``send_pipe``).
What the bytes mean is ``messages.py``'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import socket
import ssl
import sys
import termios
from collections.abc import Iterator

from xend_actors import sxp
from xend_actors.transfer.xfr.decoder import Decoder
from xend_actors.transfer.xfr.messages import MAX_DATA, Code, Data, Err, Message, XfrError, encode
from xend_actors.transfer.xfr.pipes import SPLICE_FLAGS, ready, write_all
from xend_actors.transfer.xfr.tls import failure

# Read from the socket at a time for the next message: little more than one, since the
# raw bytes a message announces after it are better moved to where they go (a pipe by
# splice, a buffer in place) than through the decoder.
CHUNK = 1 << 12
TLS_CHUNK = 1 << 18  # decrypted bytes written to a pipe at a time


class Channel:
    """One xfr connection: whole messages and raw bytes both ways, each read and write
    bounded by ``timeout`` seconds."""

    def __init__(self, sock: socket.socket, peer: str, timeout: float) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self._decoder = Decoder()
        self._tls = isinstance(sock, ssl.SSLSocket)
        sock.settimeout(timeout)
        # Each message waits for its answer: Nagle's algorithm would hold a small one
        # back until the peer's delayed ACK of the bytes before it (up to 200 ms).
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def send(self, message: Message) -> None:
        self.send_bytes(encode(message))

    def send_bytes(self, data: bytes | memoryview) -> None:
        with self._socket_errors("took no data"):
            self.sock.sendall(data)

    def receive(self) -> Message:
        """The next message."""
        try:
            while (message := self._decoder.next()) is None:
                self._fill()
        except sxp.ParseError as error:
            raise XfrError(f"{self.peer} sent a bad message: {error}", Code.EPROTO) from None
        return message

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
        return self._decoder.buffered

    def receive_bytes(self, size: int) -> bytes:
        """The next ``size`` of the raw bytes the last message announced: those read with
        it, then the rest read from the socket straight into place."""
        self._owed(size)
        taken = self._decoder.take(size)
        if len(taken) == size:
            return taken
        data = bytearray(size)
        view = memoryview(data)
        view[:len(taken)] = taken
        got = len(taken)
        while got < size:
            got += self._recv_into(view[got:])
        self._decoder.skip(size - len(taken))
        return bytes(data)

    def receive_into(self, fd: int, size: int) -> None:
        """Copy the next ``size`` of the raw bytes the last message announced into ``fd``
        (a pipe), each wait bounded; the kernel moves them (splice), they never pass
        through xend's memory."""
        self._owed(size)
        taken = self._decoder.take(size)
        if taken:
            write_all(fd, taken, self.timeout)
            size -= len(taken)
        if self._tls:
            self._decrypt_into(fd, size)
            return
        while size:
            try:
                moved = os.splice(self.sock.fileno(), fd, size, flags=SPLICE_FLAGS)
            except BlockingIOError:  # nothing come, or no room: wait only then
                self._wait(self.sock, "r", f"{self.peer} sent nothing")
                self._wait(fd, "w", "the reader of the stream took nothing")
                continue
            except OSError as error:
                raise XfrError(f"copying the stream from {self.peer} failed: "
                               f"{error.strerror or error}") from None
            if not moved:
                raise XfrError(f"{self.peer} closed the connection")
            self._decoder.skip(moved)
            size -= moved

    def _decrypt_into(self, fd: int, size: int) -> None:
        """``receive_into`` over TLS: OpenSSL reads and decrypts, xend writes the pipe."""
        buffer = memoryview(bytearray(min(size, TLS_CHUNK)))
        while size:
            # A read gives one TLS record (16 KiB at most): gather many for each write.
            piece = buffer[:min(size, TLS_CHUNK)]
            got = 0
            while got < len(piece):
                got += self._recv_into(piece[got:])
            write_all(fd, piece, self.timeout)
            self._decoder.skip(got)
            size -= got

    def send_pipe(self, read: int) -> None:
        """Send what comes out of the pipe ``read`` as ``(xfr.data SIZE)`` pieces until its
        writers close it (no end marker). Each piece is read into a buffer of xend's and
        sent with its header in one call. Splicing the pipe's pages onto the socket
        copied nothing here but cost more in all: the hypervisor's pipe needed fresh
        pages for every write, and the destination's hypervisor read pages long gone
        cold (a 94 MB stream on loopback: some 15 ms more CPU across the hops, most of
        it the two hypervisors')."""
        # Mapped, not from the heap: all of it goes back to the system once dropped.
        buffer = memoryview(mmap.mmap(-1, MAX_DATA))
        while True:
            ready(read, "r", None)  # the writer's pace: the caller bounds it
            size = min(int.from_bytes(fcntl.ioctl(read, termios.FIONREAD, bytes(4)),
                                      sys.byteorder), MAX_DATA)
            if not size:
                return  # readable and empty: every writer closed it
            got = os.readv(read, [buffer[:size]])  # there are size bytes: no wait
            self._send_piece(buffer[:got])

    def _send_piece(self, data: memoryview) -> None:
        header = encode(Data(len(data)))
        if self._tls:  # OpenSSL's socket sends one buffer at a time
            self.send_bytes(header)
            self.send_bytes(data)
            return
        parts = [memoryview(header), data]
        while parts:
            with self._socket_errors("took no data"):
                sent = self.sock.sendmsg(parts)
            while parts and sent >= len(parts[0]):
                sent -= len(parts.pop(0))
            if parts:
                parts[0] = parts[0][sent:]

    @contextlib.contextmanager
    def _socket_errors(self, idle: str) -> Iterator[None]:
        """The socket's errors as XfrErrors: a timeout says the peer ``idle`` that long."""
        try:
            yield
        except TimeoutError:
            raise XfrError(f"{self.peer} {idle} for {self.timeout:g} s", Code.ETIMEDOUT) from None
        except OSError as error:
            raise self._lost(error) from None

    def _lost(self, error: OSError) -> XfrError:
        if isinstance(error, ssl.SSLError):
            return failure(f"TLS with {self.peer} failed", error)
        return XfrError(f"lost the connection to {self.peer}: {error.strerror or error}")

    def _owed(self, size: int) -> None:
        if size > self._decoder.owed:
            raise RuntimeError(f"{size} raw bytes asked for, {self._decoder.owed} announced")

    def _wait(self, what: socket.socket | int, how: str, sentence: str) -> None:
        if not ready(what, how, self.timeout):
            raise XfrError(f"{sentence} for {self.timeout:g} s", Code.ETIMEDOUT)

    def _fill(self) -> None:
        with memoryview(bytearray(CHUNK)) as chunk:
            self._decoder.feed(chunk[:self._recv_into(chunk)])

    def _recv_into(self, buffer: memoryview) -> int:
        """Read into ``buffer``, waiting at most ``timeout``; how many bytes came (> 0)."""
        with self._socket_errors("sent nothing"):
            got = self.sock.recv_into(buffer)
        if not got:
            raise XfrError(f"{self.peer} closed the connection")
        return got
