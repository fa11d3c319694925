"""One domain's console: its channel to the guest, its one client, and where clients
come from (a TCP listener with ``(console-tcp yes)``, and the API's WebSocket).

A ``Relay`` lives on the Consoles hub's event loop (``hub.py``) and is only ever
touched from that loop's thread. It relays raw bytes both ways (facts §8): guest
output goes to the client and into the scrollback; while nobody is connected it
only goes to the scrollback, and the next client first gets what nobody saw (at
most ``PENDING_LIMIT`` bytes). A second client gets the original's refusal line.

A client is a ``Client``: a connection accepted on the console's TCP port, whose
bytes are the console's as they are, or (``adopt``) a ``WebSocketClient``
(``websocket.py``), a connection the web has upgraded to a WebSocket after it
authenticated its client, whose bytes travel in frames. The relay asks the same of
both, and both get the same rules.

Flow control keeps every buffer bounded: a client that does not read pauses the
reading of the channel, so the guest waits (a flooding guest runs at the client's
pace); a guest that does not read its input pauses the reading of the client.
With nobody connected the channel is always read, into the bounded scrollback.

The listener and the client outlive the channel: when a domain restarts, its old
channel ends and ``attach`` gives the relay the new domain's channel.

A console whose domain already runs (recovered by a restarted xend, restored, migrated
in) is not given up for a busy TCP port: it serves the API's clients and keeps its
scrollback at once, says why its port does not listen (a warning, and ``tcp`` false in
its info), and tries the port again every ``LISTEN_RETRY`` s until it listens.

Given a folder, the relay keeps a copy of its scrollback there (``ScrollbackFile``)
and a relay made again for the same console (xend restarted) goes on from it, with
the same offsets. Output is written a ``FLUSH_DELAY`` after it came, in one batch,
so a ``kill -9`` loses at most that much of it, and before any read of the log
answers: a follower (``since=N``) is never given an offset the file does not hold,
so across any restart it goes on where it was, nothing repeated and nothing
skipped. A new client after a restart gets only what came after it (what the
earlier life's clients saw or missed is not known); the log has it all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from xend_actors import sxp
from xend_actors.console.info import ConsoleInfo, Status
from xend_actors.console.scrollback import LogSlice, Scrollback, ScrollbackFile
from xend_actors.errors import Conflict, XendError

log = logging.getLogger(__name__)

PENDING_LIMIT = 64 * 1024  # what a new client gets of the output nobody saw
CLOSE_GRACE = 5.0  # seconds a closed console waits for its channel to end
LISTEN_RETRY = 2.0  # seconds between tries of a console's busy TCP port
FLUSH_DELAY = 0.2  # seconds output waits to be written to the scrollback's file
REFUSAL = "Cannot connect to console {id} on domain {dom}\n"

Publish = Callable[[str, sxp.Value], None]


class Relay:
    def __init__(self, port: int, domid: int, publish: Publish,
                 keep: Path | None = None) -> None:
        self.port = port
        self.domid = domid
        self.status = Status.NEW
        self.scrollback = Scrollback()
        self._file: ScrollbackFile | None = None  # the scrollback's copy in ``keep``
        self._flush: asyncio.TimerHandle | None = None
        if keep is not None:
            try:
                self._file, kept = ScrollbackFile.open(keep, port, domid)
            except OSError as error:
                log.warning("Console %s keeps its scrollback in memory only: %s", port, error)
            else:
                self.scrollback.resume(kept)
        self._publish = publish
        self._server: asyncio.AbstractServer | None = None
        self._retry: asyncio.TimerHandle | None = None  # the next try of a busy port
        self._shut = False  # xend stops: its sockets are let go
        self._channel: _Channel | None = None
        self._client: Client | None = None
        self._client_full = False  # the client's send buffer is full: the guest waits
        self._channel_full = False  # the guest does not read its input: the client waits
        # The output offset up to which a client has been given the output.
        self._seen = self.scrollback.end
        self._waiters: list[asyncio.Future[None]] = []  # long polls for more output

    def info(self) -> ConsoleInfo:
        client = self._client.peer if self._client is not None else None
        return ConsoleInfo(self.port, self.domid, self.status, client, self._server is not None)

    # --- life ----------------------------------------------------------------------------

    async def listen(self, host: str | None, *, retry: bool = False) -> None:
        """Wait for clients: on the console's TCP port at ``host``, or (None) only those
        the API brings (``adopt``). A port that cannot be had is an error, unless
        ``retry``: then the console serves the API's clients now and tries the port
        again until it listens."""
        if host is not None:
            try:
                await self._serve_tcp(host)
            except XendError as error:
                if not retry:
                    raise
                log.warning("Console %s of domain %s does not listen on its TCP port: %s; "
                            "trying again every %g s", self.port, self.domid, error.message,
                            LISTEN_RETRY)
                self._try_later(host)
        self.status = Status.LISTENING

    async def _serve_tcp(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: Client(self), host, self.port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise Conflict(f"console port in use: {self.port}") from None
            raise XendError(f"cannot listen on console port {self.port}: "
                            f"{error.strerror or error}") from None

    def _try_later(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        self._retry = loop.call_later(
            LISTEN_RETRY, lambda: loop.create_task(self._try_again(host)))

    async def _try_again(self, host: str) -> None:
        self._retry = None
        if self._ended:
            return
        try:
            await self._serve_tcp(host)
        except XendError:
            if not self._ended:
                self._try_later(host)
            return
        if self._ended:  # closed or shut while the port was being had
            self._stop_listening()
        else:
            log.info("Console %s of domain %s listens on its TCP port now", self.port,
                     self.domid)

    @property
    def _ended(self) -> bool:
        return self.status is Status.CLOSED or self._shut

    async def attach(self, channel: socket.socket) -> None:
        """Relay the console channel ``channel`` from now on, in place of any earlier one."""
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _Channel(self), channel)
        except BaseException:
            channel.close()
            raise

    async def adopt(self, sock: socket.socket, client: Client) -> bool:
        """Take the connection ``sock`` (made elsewhere) as ``client``, as if it had come
        to the TCP port; False if it was refused (it then got the refusal line, and is
        closed)."""
        if self.status is Status.CLOSED:
            sock.close()
            raise Conflict(f"the console on port {self.port} is closed: its domain is gone")
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: client, sock)
        except BaseException:
            sock.close()
            raise
        return client.taken

    def close(self) -> None:
        """The domain is gone for good: free the port now, and once the channel has ended
        (the domain's destroy ends it) drop the client. The scrollback stays."""
        if self.status is Status.CLOSED:
            return
        self.status = Status.CLOSED
        self._stop_listening()
        self.forget_file()
        self._publish("xend.console.close", str(self.port))
        if self._channel is None:
            self._drop_client()
        else:  # the guest's last words first
            asyncio.get_running_loop().call_later(CLOSE_GRACE, self._channel.transport.close)

    def _drop_client(self) -> None:
        if self._client is not None:
            client = self._client
            self.client_lost(client)
            client.finish()  # after what is still buffered
        self._wake_waiters()

    def shut(self) -> None:
        """xend stops: let go of every socket without a word; the domain lives on, and
        the scrollback's file keeps all it said."""
        self._shut = True
        self._stop_listening()
        self.write_file()
        if self._file is not None:
            self._file.close()
            self._file = None
        client, channel = self._client, self._channel
        self._client = self._channel = None
        if client is not None:
            client.drop()
        if channel is not None:
            channel.transport.abort()
        self._wake_waiters()

    def disconnect(self) -> None:
        """Drop the client, if any; the console listens for the next one."""
        if self._client is not None:
            client = self._client
            self.client_lost(client)
            client.drop()

    async def read(self, since: int, wait: float) -> LogSlice:
        """The output after offset ``since``; with none yet, wait up to ``wait`` s for some."""
        if wait > 0 and since >= self.scrollback.end and self.status is not Status.CLOSED:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await asyncio.wait({waiter}, timeout=wait)
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        self.write_file()  # what a reader is given is on disk: its offsets outlive xend
        return self.scrollback.read(since)

    def write_file(self) -> None:
        """Write what the scrollback's file lacks, now."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._file is None or self._file.end == self.scrollback.end:
            return
        try:
            self._file.write(self.scrollback)
        except OSError as error:
            log.warning("Console %s keeps its scrollback in memory only from now: %s",
                        self.port, error)
            self._file.close()
            self._file = None

    def forget_file(self) -> None:
        """The console's domain is gone for good (or it never worked): delete its file."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.remove()
            except OSError as error:
                log.warning("Cannot remove the scrollback of console %s: %s", self.port, error)

    def _stop_listening(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._server is not None:
            self._server.close()
            self._server = None

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- called by the channel and the client (each call names its caller) -------------------

    def channel_made(self, channel: _Channel) -> None:
        previous, self._channel = self._channel, channel
        if previous is not None:
            previous.transport.close()
        self._hold_client(False)
        if self._client_full:
            channel.transport.pause_reading()

    def channel_lost(self, channel: _Channel) -> None:
        if self._channel is channel:
            self._channel = None
            self._hold_client(False)
            if self.status is Status.CLOSED:
                self._drop_client()

    def channel_full(self, channel: _Channel, full: bool) -> None:
        if self._channel is channel:
            self._hold_client(full)

    def output(self, channel: _Channel, data: bytes) -> None:
        if self._channel is not channel:
            return
        self.scrollback.append(data)
        if self._file is not None and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.write_file)
        if self._client is not None:
            self._client.send(data)
            self._seen = self.scrollback.end
        if self._waiters:
            self._wake_waiters()

    def client_made(self, client: Client) -> bool:
        """Take ``client`` as the console's client; False if it must be refused."""
        if self._client is not None or self.status is not Status.LISTENING:
            return False
        self._client = client
        self.status = Status.CONNECTED
        unseen = self.scrollback.read(max(self._seen, self.scrollback.end - PENDING_LIMIT))
        if unseen.data:
            client.send(unseen.data)
        self._seen = unseen.next
        if self._channel_full:
            client.hold(True)
        host, port = client.peer
        log.info("Console connected: id=%s domain=%s client=%s:%s", self.port, self.domid,
                 host, port)
        self._publish("xend.console.connect", [str(self.port), host, str(port)])
        return True

    def client_lost(self, client: Client) -> None:
        if self._client is not client:
            return
        self._client = None
        if self.status is Status.CONNECTED:
            self.status = Status.LISTENING
        self._hold_channel(False)
        host, port = client.peer
        self._publish("xend.console.disconnect", [str(self.port), host, str(port)])

    def client_full(self, client: Client, full: bool) -> None:
        if self._client is client:
            self._hold_channel(full)

    def typed(self, client: Client, data: bytes) -> None:
        if self._client is client and self._channel is not None:
            self._channel.transport.write(data)

    def _hold_channel(self, full: bool) -> None:
        """The client's send buffer is full (or no more): stop (or resume) reading the guest."""
        self._client_full = full
        if self._channel is not None:
            if full:
                self._channel.transport.pause_reading()
            else:
                self._channel.transport.resume_reading()

    def _hold_client(self, full: bool) -> None:
        """The guest's input is full (or no more): stop (or resume) reading the client."""
        self._channel_full = full
        if self._client is not None:
            self._client.hold(full)


class _Channel(asyncio.Protocol):
    """The domain's console channel, from the hypervisor driver."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.relay.channel_made(self)

    def data_received(self, data: bytes) -> None:
        self.relay.output(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.channel_lost(self)

    def pause_writing(self) -> None:
        self.relay.channel_full(self, True)

    def resume_writing(self) -> None:
        self.relay.channel_full(self, False)


class Client(asyncio.Protocol):
    """One connection of a would-be client, the console's bytes as they are: the client,
    or one to refuse. ``peer`` is who it is when the socket does not tell."""

    def __init__(self, relay: Relay, peer: tuple[str, int] | None = None) -> None:
        self.relay = relay
        self.transport: asyncio.Transport
        self.peer: tuple[str, int] = peer or ("", 0)
        self.taken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.peer == ("", 0):
            peer = transport.get_extra_info("peername") or ("", 0)
            self.peer = (str(peer[0]), int(peer[1]))
        self.taken = self.relay.client_made(self)
        if not self.taken:
            relay = self.relay
            self.send(REFUSAL.format(id=relay.port, dom=relay.domid).encode())
            self.finish()

    # --- what the relay asks of its client ---

    def send(self, data: bytes) -> None:
        """Give the client console output."""
        self.transport.write(data)

    def hold(self, held: bool) -> None:
        """Stop (or resume) reading what the client types."""
        if held:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def finish(self) -> None:
        """End the connection after what is still to be sent."""
        self.transport.close()

    def drop(self) -> None:
        """End the connection now."""
        self.transport.abort()

    # --- what the connection tells ---

    def data_received(self, data: bytes) -> None:
        self.relay.typed(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.client_lost(self)

    def pause_writing(self) -> None:
        self.relay.client_full(self, True)

    def resume_writing(self) -> None:
        self.relay.client_full(self, False)
