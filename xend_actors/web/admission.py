"""Which connections xend serves: the caps shared by every door, and the heap trim.

At most ``xend-max-connections`` open at once over every door,
``xend-max-client-connections`` from one client (an address, or a uid on a Unix
socket), and none while fewer than ``FD_RESERVE`` descriptors are free, which xend
keeps for its own work (the store, notify deliveries, consoles). A connection past a
cap is answered a 503 on the spot without waiting for anything (``refuse``; closed
unanswered under TLS, whose handshake it does not wait for). After connections have
come and gone the heap is handed back (``memory.trim``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Hashable
from typing import Any

from xend_actors import sxp
from xend_actors.limits import FILES_SPARE
from xend_actors.web import memory

log = logging.getLogger(__name__)

FD_RESERVE = FILES_SPARE  # descriptors no connection may take: xend's own work needs them
FD_COUNT_INTERVAL = 0.5  # seconds a count of the free descriptors is trusted, when many
REFUSALS_REPORTED = 10.0  # seconds between reports of refused connections
TRIM_INTERVAL = 2.0  # seconds between heap trims, while connections come and go

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Admission:
    """Which connections may be served, shared by every door: the caps, the fd reserve,
    and the heap trim after connections have come and gone."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open: Counter[Hashable] = Counter()
        self._count = 0
        self._closed_since_trim = False
        self._trim_again = True  # the next trim is followed by one more, an interval later
        self._last_trim = time.monotonic()
        self._refused = 0  # since the last report (only the accepting thread counts)
        self._reported = -REFUSALS_REPORTED
        self._fds = _FreeFds()

    def admit(self, client: Hashable) -> str | None:
        """Why the client's new connection is refused, or None once it is counted."""
        refusal = self._refusal(client)
        if refusal is not None:
            self._refused += 1
            if (now := time.monotonic()) - self._reported >= REFUSALS_REPORTED:
                # A flood of refusals is one line a while, not one each.
                log.warning("%d connection(s) refused since the last report, the latest "
                            "from %s: %s", self._refused, client, refusal)
                self._refused, self._reported = 0, now
        return refusal

    def _refusal(self, client: Hashable) -> str | None:
        if self._fds.short():
            return "xend is short of file descriptors; try again later"
        with self._lock:
            if self._count >= self.total:
                return f"xend has {self.total} connections open already; try again later"
            if self._open[client] >= self.per_client:
                return (f"this client has {self.per_client} connections open already; "
                        "close one or try again later")
            self._count += 1
            self._open[client] += 1
        return None

    def release(self, client: Hashable) -> None:
        with self._lock:
            self._count -= 1
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]
            self._closed_since_trim = self._trim_again = True

    def tick(self) -> None:
        """Trims the heap now and then while connections close (the server loop's poll),
        and once more an interval after the last close: a finished request's thread frees
        its memory a little after its connection is released."""
        now = time.monotonic()
        with self._lock:
            if not self._closed_since_trim or now - self._last_trim < TRIM_INTERVAL:
                return
            self._closed_since_trim = self._trim_again
            self._trim_again = not self._trim_again
            self._last_trim = now
        memory.trim()


class _FreeFds:
    """Whether fewer than ``FD_RESERVE`` descriptors are free. Counting them lists
    /proc/self/fd, which costs a millisecond at a few thousand (a xend of 1000 domains),
    so a count is trusted for ``FD_COUNT_INTERVAL`` less one for each connection since,
    while it is far from the reserve; near it, they are counted each time."""

    def __init__(self) -> None:
        self._free = 0
        self._counted = -FD_COUNT_INTERVAL
        self._since = 0

    def short(self) -> bool:
        now = time.monotonic()
        self._since += 1
        if now - self._counted > FD_COUNT_INTERVAL or \
                self._free - self._since < 4 * FD_RESERVE:
            self._free, self._counted, self._since = _free_fds(), now, 0
        return self._free - self._since < FD_RESERVE


def _free_fds() -> int:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return FD_RESERVE
    try:
        return limit - len(os.listdir("/proc/self/fd"))
    except OSError:  # EMFILE: none free at all
        return 0


def peer_uid(connection: socket.socket) -> int:
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(creds)[1])


def client_of(connection: socket.socket, address: Any) -> Hashable:
    """Whom the per-client cap counts a connection against: its address, or on a Unix
    socket its user."""
    if connection.family == socket.AF_UNIX:
        return ("uid", peer_uid(connection))
    return ("ip", address[0])


def refuse(connection: socket.socket, reason: str, speak: bool,
           status: str = "503 Service Unavailable") -> None:
    """Answer a connection with an error and close it, never waiting on it: what the
    client sent so far is read, so that the close sends the reply and a FIN, not a reset."""
    with contextlib.suppress(OSError):
        connection.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            connection.recv(64 * 1024)
        if speak:
            body = sxp.show(["xend.err", reason]).encode()
            connection.send(
                f"HTTP/1.1 {status}\r\nContent-Type: {sxp.MIME_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                .encode() + body)
        connection.shutdown(socket.SHUT_WR)
    connection.close()
