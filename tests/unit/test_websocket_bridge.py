"""The console WebSocket's bridge on local socket pairs (no xend): what a client that is
gone, one that sends too much, and a guest that does not read its input get."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping

from xend_actors.web import websocket
from xend_actors.web.websocket import Bridge


@dataclass
class Ends:
    client: socket.socket  # the browser's or xm's end of the WebSocket
    ws: Connection  # the client's protocol state
    console: socket.socket  # the console's end of the byte stream
    bridge: threading.Thread

    def send(self, event: Event) -> None:
        self.client.sendall(self.ws.send(event))

    def events(self, timeout: float = 10.0) -> list[Event]:
        self.client.settimeout(timeout)
        data = self.client.recv(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())


@pytest.fixture
def ends() -> Iterator[Ends]:
    client, server = socket.socketpair()
    console, theirs = socket.socketpair()
    server.settimeout(websocket.SEND_STALL)
    bridge = threading.Thread(target=Bridge(server, theirs).run, daemon=True)
    bridge.start()
    yield Ends(client, Connection(ConnectionType.CLIENT), console, bridge)
    for sock in (client, server, console, theirs):
        sock.close()


def test_bytes_go_both_ways(ends: Ends) -> None:
    ends.send(BytesMessage(data=b"echo hi\r"))
    ends.console.settimeout(10)
    assert ends.console.recv(100) == b"echo hi\r"
    ends.console.sendall(b"hi\r\n# ")
    (event,) = ends.events()
    assert isinstance(event, BytesMessage) and event.data == b"hi\r\n# "
    ends.console.close()  # the console drops its client: the WebSocket closes
    (closed,) = ends.events()
    assert isinstance(closed, CloseConnection) and closed.code == 1000
    ends.bridge.join(timeout=10)
    assert not ends.bridge.is_alive()


def test_a_client_that_answers_no_ping_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "PING_AFTER", 0.2)
    monkeypatch.setattr(websocket, "GONE_AFTER", 0.3)
    client, server = socket.socketpair()
    console, theirs = socket.socketpair()
    with client, server, console, theirs:
        bridge = threading.Thread(target=Bridge(server, theirs).run, daemon=True)
        bridge.start()
        ws = Connection(ConnectionType.CLIENT)
        client.settimeout(10)
        seen: list[Event] = []
        while not any(isinstance(event, CloseConnection) for event in seen):
            ws.receive_data(client.recv(65536) or None)
            seen += ws.events()  # read, never answered: a half-open connection
        assert isinstance(seen[0], Ping)
        assert seen[-1] == CloseConnection(code=1001, reason="no answer")
        bridge.join(timeout=10)
        assert not bridge.is_alive()


def test_a_client_that_answers_pings_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "PING_AFTER", 0.1)
    monkeypatch.setattr(websocket, "GONE_AFTER", 0.2)
    client, server = socket.socketpair()
    console, theirs = socket.socketpair()
    with client, server, console, theirs:
        bridge = threading.Thread(target=Bridge(server, theirs).run, daemon=True)
        bridge.start()
        ws = Connection(ConnectionType.CLIENT)
        client.settimeout(10)
        pings = 0
        while pings < 5:  # a second and more: many times GONE_AFTER
            ws.receive_data(client.recv(65536))
            for event in ws.events():
                assert isinstance(event, Ping)
                client.sendall(ws.send(event.response()))
                pings += 1
        assert bridge.is_alive()
        client.sendall(ws.send(CloseConnection(code=1000)))
        bridge.join(timeout=10)
        assert not bridge.is_alive()


def test_a_message_over_the_limit_ends_the_connection(ends: Ends) -> None:
    part = b"x" * 4096
    for _ in range(websocket.MAX_MESSAGE // len(part) + 1):  # one message, in fragments
        ends.send(BytesMessage(data=part, message_finished=False))
    events: list[Event] = []
    while not events:
        events = ends.events()
    assert events[-1] == CloseConnection(code=1009, reason="message too big")
    ends.bridge.join(timeout=10)
    assert not ends.bridge.is_alive()
    ends.console.setblocking(False)
    received = 0
    with contextlib.suppress(BlockingIOError):
        while data := ends.console.recv(65536):
            received += len(data)
    assert 0 < received <= websocket.MAX_MESSAGE  # the console got no more than the limit


def test_a_guest_that_does_not_read_stops_the_client_not_its_output(ends: Ends) -> None:
    # The console end reads nothing: the bridge must stop reading the client (so the
    # client's sends block) instead of buffering what it types without end.
    ends.client.setblocking(False)
    frame = ends.ws.send(BytesMessage(data=b"k" * 16384))
    sent = 0
    pending = b""
    while sent < 256 << 20:
        try:
            pending = pending or frame
            pending = pending[ends.client.send(pending):]
        except BlockingIOError:
            break
        sent += len(frame)
    else:
        pytest.fail("the bridge took 256 MiB from a client whose guest reads nothing")
    ends.console.sendall(b"still talking\r\n")  # ...and the guest's output still flows
    ends.client.setblocking(True)
    (event,) = ends.events()
    assert isinstance(event, BytesMessage) and event.data == b"still talking\r\n"
