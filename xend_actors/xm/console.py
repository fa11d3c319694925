"""The xm commands on consoles (facts §14.2): ``xm consoles`` and ``xm console DOM``.

``xm console`` is the original's raw-terminal client: it prints the original banner,
relays bytes both ways with the terminal in raw mode, and quits on Ctrl-] (0x1d),
restoring the terminal. Unlike the original it reaches the console through xend's
API, the WebSocket ``/xend/console/<port>/attach``, on a connection made the way xm
reaches xend (``XendClient.open_socket``: the Unix socket, or TCP with xm's
credentials), and never the console's TCP port: that port is open only with
``(console-tcp yes)``, and only to whoever can reach it, while the API knows who is
asking, works wherever xm reaches xend, and is the one way that always exists. It also
turns off the terminal's signal keys, so Ctrl-C reaches the guest instead of killing xm.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import termios
import tty
from collections.abc import Iterable, Iterator

import click
from wsproto import WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
)

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError
from xend_actors.xm.complete import dom_argument

BANNER = "************ REMOTE CONSOLE: CTRL-] TO QUIT ********"
EXITED = "************ REMOTE CONSOLE EXITED *****************"
QUIT = b"\x1d"  # Ctrl-]
CONSOLES_HEADER = "Dom Port  Id Connection"
CHUNK = 64 * 1024
MAX_REFUSAL = 64 * 1024  # of the body of a refused attach


def consoles_row(info: sxp.Value) -> str:
    """One ``xm consoles`` line, ``%3s %4s %3s %s``: domain, port, id, connected client."""
    connected = sxp.child(info, "connected")
    connection = f"{connected[1]}:{connected[2]}" if isinstance(connected, list) else ""
    dom, port, id_ = (str(sxp.child_value(info, name, "")) for name in
                      ("domain", "console_port", "id"))
    return f"{dom:>3} {port:>4} {id_:>3} {connection}"


@click.command("consoles")
@click.pass_obj
def consoles(client: XendClient) -> None:
    """List the domain consoles."""
    click.echo(CONSOLES_HEADER)
    for info in client.xend_consoles(detail=True):
        click.echo(consoles_row(info))


@click.command("console")
@dom_argument()
@click.pass_obj
def console(client: XendClient, dom: str) -> None:
    """Open the console of a domain; Ctrl-] quits."""
    port = sxp.child_value(sxp.child(client.xend_domain(dom), "console"), "console_port")
    if port is None:
        raise click.ClickException(f"Domain {dom} has no console")
    attach(client, int(port))


def attach(client: XendClient, port: int) -> None:
    """Be the terminal of the console on ``port`` until Ctrl-] or its end."""
    try:
        sock = client.open_socket()
    except OSError as error:
        raise XendError(f"Error connecting to xend at {client.where}: "
                        f"{error.strerror or error}; is xend running?") from None
    with sock:
        ws, early = upgrade(sock, client.socket_headers(), f"{client.root}console/{port}/attach")
        sock.settimeout(None)
        click.echo(BANNER)
        with raw_terminal(sys.stdin.fileno()):
            relay(sock, ws, early, sys.stdin.fileno(), sys.stdout.fileno())
        click.echo("\n" + EXITED)


def upgrade(sock: socket.socket, headers: dict[str, str],
            target: str) -> tuple[WSConnection, list[Event]]:
    """Open the WebSocket at ``target`` on ``sock``; it and what came with its upgrade.
    A refusal raises ``XendError`` with xend's message, as any request's would."""
    ws = WSConnection(ConnectionType.CLIENT)
    fields = dict(headers)
    host = fields.pop("Host")
    sock.sendall(ws.send(Request(host=host, target=target, extra_headers=[
        (name.encode(), value.encode()) for name, value in fields.items()])))
    status, body = 0, b""
    while True:
        data = sock.recv(CHUNK)
        if not data:
            raise XendError("xend closed the connection instead of opening the console")
        ws.receive_data(data)
        events = list(ws.events())
        for at, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                return ws, events[at + 1:]
            if isinstance(event, RejectConnection):
                status = event.status_code
                finished = not event.has_body
            elif isinstance(event, RejectData):
                body += event.data
                finished = event.body_finished or len(body) > MAX_REFUSAL
            else:
                continue
            if finished:
                raise _refusal(status, body)


def _refusal(status: int, body: bytes) -> XendError:
    """xend's answer to an attach it refused, as the client rule reads any answer."""
    try:
        value = sxp.parse(body[:MAX_REFUSAL])
    except sxp.ParseError:
        value = None
    if isinstance(value, list) and sxp.name(value) == "xend.err":
        return XendError(str(sxp.child0(value, "")), status=status)
    return XendError(f"xend refused the console: HTTP {status}", status=status)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode for the block, then as it was."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSAFLUSH)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def relay(sock: socket.socket, ws: WSConnection, early: Iterable[Event], keyboard: int,
          screen: int) -> None:
    """Bytes both ways until the console closes, the keyboard ends or Ctrl-] is typed."""
    if not _shown(sock, ws, early, screen):
        return
    # select(2), not epoll: a keyboard that is a file or /dev/null is always ready (at its end).
    with selectors.SelectSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(keyboard, selectors.EVENT_READ)
        while True:
            # A TLS socket may hold decrypted bytes that select cannot see.
            pending = getattr(sock, "pending", lambda: 0)()
            ready = [key.fileobj for key, _ in selector.select(0 if pending else None)]
            if pending or sock in ready:
                data = sock.recv(CHUNK)
                ws.receive_data(data or None)
                if not _shown(sock, ws, ws.events(), screen):
                    return
            if keyboard in ready:
                typed = os.read(keyboard, CHUNK)
                before, quit_, _ = typed.partition(QUIT)
                if before:
                    sock.sendall(ws.send(BytesMessage(data=before)))
                if quit_ or not typed:
                    _say_goodbye(sock, ws.send(CloseConnection(code=1000)))
                    return


def _shown(sock: socket.socket, ws: WSConnection, events: Iterable[Event], screen: int) -> bool:
    """Show the console's bytes among ``events`` and answer its pings; False at its end."""
    for event in events:
        if isinstance(event, BytesMessage):
            _write_all(screen, event.data)
        elif isinstance(event, Ping):
            sock.sendall(ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if ws.state is ConnectionState.REMOTE_CLOSING:
                _say_goodbye(sock, ws.send(event.response()))
            return False
    return True


def _say_goodbye(sock: socket.socket, close: bytes) -> None:
    """Send the close frame if xend still listens: it may have gone first."""
    with contextlib.suppress(OSError):
        sock.sendall(close)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


COMMANDS = (console, consoles)
