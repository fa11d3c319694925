"""A console's client over a WebSocket: the console's bytes in binary frames, on the
consoles' event loop like every other client.

The web checks the upgrade request and who sends it, answers ``101``, and hands the
connection over (``Consoles.attach``); from then on it is a client of the relay as one
on the TCP port is, on the same loop, under the same rules (one client, what nobody
saw first, flow control both ways), with frames around its bytes:

- each piece of console output goes out as one binary frame;
- what the client sends in binary (or text) frames is typed; a message longer than
  ``MAX_MESSAGE`` ends the connection (1009). No extension is accepted, so no frame is
  inflated beyond what came;
- a client silent for ``PING_AFTER`` seconds is pinged; one still silent ``GONE_AFTER``
  seconds later is gone (a half-open connection) and is dropped. While the relay
  holds its reading (its guest does not read), its answers wait unread too: not silence;
- its end sends a close frame first (the refusal line goes out, then the close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from xend_actors.console.relay import Client, Relay

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024  # of one message from the client: keystrokes and pastes
PING_AFTER = 30.0  # seconds without a word from the client before it is pinged
GONE_AFTER = 30.0  # more seconds without an answer: the client is gone
_UNSENDABLE = (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE)  # say no code came


class WebSocketClient(Client):
    """A client on a connection already upgraded to a WebSocket; ``on_end`` is called
    (on the loop) once the connection has ended, however it ended."""

    def __init__(self, relay: Relay, peer: tuple[str, int],
                 on_end: Callable[[], None]) -> None:
        super().__init__(relay, peer)
        self.ws = Connection(ConnectionType.SERVER)
        self._on_end = on_end
        self._message = 0  # bytes of the client's message so far
        self._held = False
        self._heard = 0.0
        self._pinged = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._heard = asyncio.get_running_loop().time()
        self._watch(PING_AFTER)
        super().connection_made(transport)

    # --- what the relay asks of its client ---

    def send(self, data: bytes) -> None:
        if self.ws.state is ConnectionState.OPEN:
            self.transport.write(self.ws.send(BytesMessage(data=data)))

    def hold(self, held: bool) -> None:
        self._held = held
        super().hold(held)

    def finish(self) -> None:
        self._close(CloseReason.NORMAL_CLOSURE, "console closed")
        self.transport.close()

    def drop(self) -> None:
        if not self.transport.get_write_buffer_size():  # a close frame still goes out
            self._close(CloseReason.NORMAL_CLOSURE, "disconnected")
        self.transport.abort()

    # --- what the connection tells ---

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # its close frame went out: the rest is not read
            return
        self._heard, self._pinged = asyncio.get_running_loop().time(), False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, BytesMessage | TextMessage):
                part = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                size = self._message + len(part)
                if size > MAX_MESSAGE:
                    self._close(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    self.transport.close()
                    return
                self._message = 0 if event.message_finished else size
                if part:
                    self.relay.typed(self, part)
            elif isinstance(event, Ping):
                self.transport.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):  # the client's, or a protocol error
                self._close(event.code, event.reason or "")
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().connection_lost(exc)
        self._on_end()

    # --- frames of its own ---

    def _close(self, code: int, reason: str) -> None:
        """Send (or answer with) a close frame, if one may still be sent."""
        if self.transport.is_closing() or self.ws.state not in (
                ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        with contextlib.suppress(LocalProtocolError):
            self.transport.write(self.ws.send(CloseConnection(
                code=CloseReason.NORMAL_CLOSURE if code in _UNSENDABLE else code,
                reason=reason)))

    def _watch(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._keep_alive)

    def _keep_alive(self) -> None:
        if self.transport.is_closing():
            return
        now = asyncio.get_running_loop().time()
        if self._held:
            self._heard, self._pinged = now, False
        deadline = self._heard + PING_AFTER + (GONE_AFTER if self._pinged else 0.0)
        if now < deadline:
            self._watch(deadline - now)
        elif not self._pinged:
            self._pinged = True
            self.transport.write(self.ws.send(Ping(payload=b"xend")))
            self._watch(GONE_AFTER)
        else:
            log.info("Console %s: its WebSocket client %s:%s said nothing for %g s: dropped",
                     self.relay.port, *self.peer, PING_AFTER + GONE_AFTER)
            self.drop()
