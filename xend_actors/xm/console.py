"""The xm commands on consoles (facts §14.2): ``xm consoles`` and ``xm console DOM``.

``xm console`` is the original's raw-terminal client: it connects to the domain's
console port on xend's host (the host of the ``XEND`` server setting; localhost
when xm reaches xend over its Unix socket), prints the original banner, relays
bytes both ways with the terminal in raw mode, and quits on Ctrl-] (0x1d),
restoring the terminal. Unlike the original it also turns off the terminal's
signal keys, so Ctrl-C reaches the guest instead of killing xm.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import termios
import tty
from collections.abc import Iterator
from urllib.parse import urlsplit

import click

from xend_actors import sxp
from xend_actors.client import XendClient

BANNER = "************ REMOTE CONSOLE: CTRL-] TO QUIT ********"
EXITED = "************ REMOTE CONSOLE EXITED *****************"
QUIT = b"\x1d"  # Ctrl-]
CONSOLES_HEADER = "Dom Port  Id Connection"
CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024


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
@click.argument("dom")
@click.pass_obj
def console(client: XendClient, dom: str) -> None:
    """Open the console of a domain; Ctrl-] quits."""
    port = sxp.child_value(sxp.child(client.xend_domain(dom), "console"), "console_port")
    if port is None:
        raise click.ClickException(f"Domain {dom} has no console")
    connect(xend_host(client), int(port))


def xend_host(client: XendClient) -> str:
    """The host xm reaches xend on, where the consoles are too."""
    where = urlsplit(client.where)
    return (where.hostname or "localhost") if where.scheme == "http" else "localhost"


def connect(host: str, port: int) -> None:
    """Be the terminal of the console at ``host:port`` until Ctrl-] or its end."""
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as error:
        raise click.ClickException(f"Cannot connect to the console at {host}:{port}: "
                                   f"{error.strerror or error}") from None
    with sock:
        sock.settimeout(None)
        click.echo(BANNER)
        with raw_terminal(sys.stdin.fileno()):
            relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
        click.echo("\n" + EXITED)


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


def relay(sock: socket.socket, keyboard: int, screen: int) -> None:
    """Bytes both ways until the console closes, the keyboard ends or Ctrl-] is typed."""
    # select(2), not epoll: a keyboard that is a file or /dev/null is always ready (at its end).
    with selectors.SelectSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(keyboard, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is sock:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    _write_all(screen, data)
                else:
                    typed = os.read(keyboard, CHUNK)
                    before, quit_, _ = typed.partition(QUIT)
                    sock.sendall(before)
                    if quit_ or not typed:
                        return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


COMMANDS = (console, consoles)
