"""A console's WebSocket client on a relay, on local socket pairs (no xend, no
hypervisor): bytes both ways in frames, one client, and what a client that is gone, one
that sends too much, and a guest that does not read its input get."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping

from xend_actors.console import websocket
from xend_actors.console.info import Status
from xend_actors.console.relay import REFUSAL, Relay
from xend_actors.console.websocket import WebSocketClient


class Browser:
    """The client's end of a WebSocket to the relay (after the upgrade)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = Connection(ConnectionType.CLIENT)
        self.ended = asyncio.Event()

    async def send(self, data: bytes, finished: bool = True) -> None:
        await asyncio.get_running_loop().sock_sendall(
            self.sock, self.ws.send(BytesMessage(data=data, message_finished=finished)))

    async def events(self, timeout: float = 10.0) -> list[Event]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536),
                                      timeout)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def output(self, timeout: float = 10.0) -> bytes:
        """The console output of the next frames, up to a close."""
        got = b""
        for event in await self.events(timeout):
            if isinstance(event, BytesMessage):
                got += event.data
        return got

    async def closed(self, timeout: float = 10.0) -> CloseConnection:
        while True:
            for event in await self.events(timeout):
                if isinstance(event, CloseConnection):
                    return event


Test = Callable[[Relay, socket.socket, Callable[[], Awaitable[Browser]]], Awaitable[None]]


def on_a_relay(test: Test) -> None:
    """Run ``test`` with a relay (no TCP port), the guest's end of its channel and a way
    to make WebSocket clients of it."""

    async def run() -> None:
        relay = Relay(9600, 7, lambda name, value: None)
        await relay.listen(None)
        guest, channel = socket.socketpair()
        guest.setblocking(False)
        await relay.attach(channel)
        made: list[socket.socket] = []

        async def browser() -> Browser:
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            made.append(ours)
            client = Browser(ours)
            await relay.adopt(theirs, WebSocketClient(relay, ("<local>", 0),
                                                      client.ended.set))
            return client

        try:
            await test(relay, guest, browser)
        finally:
            relay.shut()
            for sock in [guest, *made]:
                sock.close()

    asyncio.run(run())


def test_bytes_go_both_ways_and_the_console_s_end_closes_the_websocket() -> None:
    async def test(relay: Relay, guest: socket.socket,
                   browser: Callable[[], Awaitable[Browser]]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(guest, b"booted\r\n# ")  # before anyone was there
        await asyncio.sleep(0.05)
        client = await browser()
        assert await client.output() == b"booted\r\n# "  # what nobody saw, first
        assert relay.info().status is Status.CONNECTED
        await client.send(b"echo hi\r")
        assert await loop.sock_recv(guest, 100) == b"echo hi\r"
        await loop.sock_sendall(guest, b"hi\r\n# ")
        assert await client.output() == b"hi\r\n# "
        relay.close()
        guest.close()  # the domain is gone: its channel ends
        assert (await client.closed()).code == 1000
        await asyncio.wait_for(client.ended.wait(), 10)

    on_a_relay(test)


def test_a_second_client_gets_the_refusal_line_then_the_close() -> None:
    async def test(relay: Relay, guest: socket.socket,
                   browser: Callable[[], Awaitable[Browser]]) -> None:
        await browser()
        second = await browser()
        events = await second.events()
        refusal = REFUSAL.format(id=9600, dom=7).encode()
        assert [type(e) for e in events] == [BytesMessage, CloseConnection]
        assert isinstance(events[0], BytesMessage) and events[0].data == refusal
        await asyncio.wait_for(second.ended.wait(), 10)
        assert relay.info().status is Status.CONNECTED  # the first is still the client

    on_a_relay(test)


def test_a_client_that_answers_no_ping_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "PING_AFTER", 0.2)
    monkeypatch.setattr(websocket, "GONE_AFTER", 0.3)

    async def test(relay: Relay, guest: socket.socket,
                   browser: Callable[[], Awaitable[Browser]]) -> None:
        client = await browser()  # reads, never answers: a half-open connection
        seen: list[Event] = []
        while not any(isinstance(event, CloseConnection) for event in seen):
            seen += await client.events()
        assert isinstance(seen[0], Ping)
        assert seen[-1] == CloseConnection(code=1000, reason="disconnected")
        await asyncio.wait_for(client.ended.wait(), 10)
        assert relay.info().status is Status.LISTENING

    on_a_relay(test)


def test_a_client_that_answers_pings_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "PING_AFTER", 0.1)
    monkeypatch.setattr(websocket, "GONE_AFTER", 0.2)

    async def test(relay: Relay, guest: socket.socket,
                   browser: Callable[[], Awaitable[Browser]]) -> None:
        client = await browser()
        pings = 0
        while pings < 5:  # a second and more: many times GONE_AFTER
            for event in await client.events():
                assert isinstance(event, Ping)
                await asyncio.get_running_loop().sock_sendall(
                    client.sock, client.ws.send(event.response()))
                pings += 1
        assert relay.info().status is Status.CONNECTED

    on_a_relay(test)


def test_a_message_over_the_limit_ends_the_connection() -> None:
    async def test(relay: Relay, guest: socket.socket,
                   browser: Callable[[], Awaitable[Browser]]) -> None:
        client = await browser()
        part = b"x" * 4096
        for _ in range(websocket.MAX_MESSAGE // len(part) + 1):  # one message, in pieces
            await client.send(part, finished=False)
        assert await client.closed() == CloseConnection(code=1009, reason="message too big")
        await asyncio.wait_for(client.ended.wait(), 10)
        received = b""
        with contextlib.suppress(TimeoutError):
            while True:
                received += await asyncio.wait_for(asyncio.get_running_loop().sock_recv(
                    guest, 1 << 20), 0.5)
        assert 0 < len(received) <= websocket.MAX_MESSAGE  # the guest got no more

    on_a_relay(test)


def test_a_guest_that_does_not_read_holds_the_client_but_not_its_output() -> None:
    async def test(relay: Relay, guest: socket.socket,
                   browser: Callable[[], Awaitable[Browser]]) -> None:
        loop = asyncio.get_running_loop()
        client = await browser()
        frame = client.ws.send(BytesMessage(data=b"k" * 16384))
        sent = 0
        while sent < 256 << 20:  # the guest reads nothing of it
            try:
                await asyncio.wait_for(loop.sock_sendall(client.sock, frame), 1)
            except TimeoutError:
                break
            sent += len(frame)
        else:
            pytest.fail("xend took 256 MiB from a client whose guest reads nothing")
        await loop.sock_sendall(guest, b"still talking\r\n")
        assert await client.output() == b"still talking\r\n"  # ...and its output flows

    on_a_relay(test)
