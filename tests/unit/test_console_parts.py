"""The pure parts of consoles: scrollback, the info SXP, the ``xm consoles`` row, and a
relay's flow control on local sockets (no xend, no hypervisor)."""

from __future__ import annotations

import asyncio
import socket

from tests.support.ports import free_port
from xend_actors.console.info import ConsoleInfo, Status
from xend_actors.console.relay import Relay
from xend_actors.console.scrollback import Scrollback
from xend_actors.xm.console import consoles_row

# --- scrollback -------------------------------------------------------------------------------


def test_scrollback_reads_after_an_offset() -> None:
    log = Scrollback()
    log.append(b"hello ")
    log.append(b"world")
    part = log.read(0)
    assert (part.data, part.first, part.next) == (b"hello world", 0, 11)
    part = log.read(6)
    assert (part.data, part.first, part.next) == (b"world", 6, 11)
    assert log.read(11).data == b""
    assert log.read(99).next == 11


def test_scrollback_keeps_the_last_bytes_and_says_what_was_dropped() -> None:
    log = Scrollback(limit=100)
    data = bytes(range(256)) * 1000
    at = 0
    for size in [7, 1, 99, 100, 101, 250, 3] * 300:  # small and big writes, round the ring
        log.append(data[at:at + size])
        at += size
        part = log.read(0)
        assert part.first == max(0, at - 100)  # never more than the limit
        assert part.data == data[part.first:at]
        assert part.next == at
        assert log.read(at - 5).data == data[at - 5:at]
        assert log.read(at).data == b""
# --- info and xm ----------------------------------------------------------------------------


def test_the_info_sxp_uses_the_port_as_id() -> None:
    info = ConsoleInfo(9605, 5, Status.CONNECTED, ("10.0.0.1", 4321))
    assert info.sxpr() == [
        "console", ["status", "connected"], ["id", "9605"], ["domain", "5"],
        ["local_port", "9605"], ["remote_port", "1"], ["console_port", "9605"],
        ["connected", "10.0.0.1", "4321"]]
    assert ConsoleInfo(9601, 1, Status.LISTENING).sxpr()[-1] == ["console_port", "9601"]


def test_xm_consoles_row_is_the_original_format() -> None:
    connected = ConsoleInfo(9605, 5, Status.CONNECTED, ("10.0.0.1", 4321)).sxpr()
    assert consoles_row(connected) == "  5 9605 9605 10.0.0.1:4321"
    assert consoles_row(ConsoleInfo(9601, 1, Status.LISTENING).sxpr()) == "  1 9601 9601 "


# --- a relay on local sockets ----------------------------------------------------------------


def test_a_client_that_does_not_read_holds_the_guest_back_and_loses_nothing() -> None:
    events: list[tuple[str, object]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        relay = Relay(free_port(), 7, lambda name, value: events.append((name, value)))
        await relay.listen("127.0.0.1")
        guest, channel = socket.socketpair()
        guest.setblocking(False)
        await relay.attach(channel)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.transport.pause_reading()  # a client that does not read
        chunk, sent = b"y" * 65536, 0
        while True:  # the guest writes until its channel takes no more for a while
            try:
                sent += guest.send(chunk)
            except BlockingIOError:
                if not await writable(guest, 0.5):
                    break
        assert sent < 64 * 1024 * 1024  # held back: xend buffers a bounded amount
        assert relay.info().status is Status.CONNECTED
        writer.transport.resume_reading()
        received = 0
        while received < sent:
            received += len(await asyncio.wait_for(reader.read(1 << 20), 10))
        assert received == sent
        writer.write(b"typed")
        await writer.drain()
        assert await loop.sock_recv(guest, 5) == b"typed"
        relay.close()
        guest.close()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert relay.scrollback.end == sent

    asyncio.run(run())
    names = [name for name, _ in events]
    assert names == ["xend.console.connect", "xend.console.close", "xend.console.disconnect"]


async def writable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` takes more bytes within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(sock, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_writer(sock)
    return True
