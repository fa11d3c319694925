"""The Consoles actor: every domain console of xend, on one event loop thread.

DESIGN.md draws one Console actor per domain. A pykka actor is a thread, and a
relay that blocks on its sockets wants one or two more, so at thousands of domains
consoles alone would cost thousands of threads and their stacks, most of xend's
memory (the aim is at most 150 KiB of RSS per domain). Here ONE actor owns every
console, and ONE asyncio loop, on a thread the actor starts and stops, runs all
their sockets: a console is a few small objects (``relay.py``). The actor's
methods are the only way in; each hands its work to the loop and waits for it
with a timeout, so callers keep asking an actor as everywhere else in xend.

A console lives from the domain's build to its final death (a restart keeps it
and re-attaches it to the new domain's channel: ``open`` again). Consoles are
found by domain id while their domain lives and by port (their id, see
``info.py``) for HTTP. A closed console keeps its scrollback until its port is
used again; only the last ``CLOSED_KEPT`` closed consoles are kept.

Each open console keeps a copy of its scrollback in ``<run-dir>/state/console``
(``relay.py``), so a xend restarted (or killed) and reopening the console of a
domain it recovers shows what the guest printed before. A closed console's copy is
deleted (its scrollback stays in memory as said above, not across a restart), and
so is every copy no recovered domain claimed (``prune``). A host reboot empties
``<run-dir>/state`` (``store.detect_host_reboot``), copies with it.

Clients reach a console through the authenticated API (``attach``: the web hands
over a connection it has upgraded to a WebSocket, ``websocket.py``); only with
``(console-tcp yes)`` does each console also listen on its TCP port, as the
original's did. Without TCP a console's port is still its id, and two live consoles
never share one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import re
import socket
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.config import XendConfig
from xend_actors.console.info import ConsoleInfo, Status
from xend_actors.console.relay import Relay
from xend_actors.console.scrollback import LogSlice
from xend_actors.console.view import ConsoleView, ShownConsole
from xend_actors.console.websocket import WebSocketClient
from xend_actors.errors import Conflict, NotFound, Timeout
from xend_actors.events.bus import EventBusProxy
from xend_actors.layered import Layered
from xend_actors.trace import SetTrace, TracedActor, trace_this_thread

log = logging.getLogger(__name__)

CLOSED_KEPT = 64  # each keeps up to a MiB of scrollback
KEPT_NAME = re.compile(r"([0-9]{1,5})\.log")  # a scrollback's file: ScrollbackFile
LOOP_TIMEOUT = 10.0

T = TypeVar("T")


class Consoles(TracedActor):
    def __init__(self, config: XendConfig, events: EventBusProxy) -> None:
        super().__init__()
        # None: no TCP port at all, clients come only through the API.
        self.host = (config.console_address or "0.0.0.0") if config.console_tcp else None
        self.port_base = config.console_port_base
        self._events = events
        self._keep = _keep_folder(config.run_dir / "state" / "console")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="consoles",
                                        daemon=True)
        # Touched on the loop's thread only.
        self._live: dict[int, Relay] = {}  # by domain id
        self._by_port: dict[int, Relay] = {}  # live and closed
        self._closed: deque[int] = deque()  # ports of closed consoles, oldest first
        self._shown: dict[int, ShownConsole] = {}  # the live consoles' infos, by domain id
        self._published: Layered[int, ShownConsole] = Layered()  # ... as the view has them
        self._view = ConsoleView()

    def on_start(self) -> None:
        self._thread.start()

    def on_receive(self, message: object) -> object:
        if isinstance(message, SetTrace):  # the loop thread hosts every relay: trace it too
            self._loop.call_soon_threadsafe(trace_this_thread)
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._on_loop(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=LOOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    # --- asked by Domain actors ----------------------------------------------------------------

    def open(self, domid: int, channel: socket.socket, port: int | None = None, *,
             running: bool = False) -> ConsoleInfo:
        """Open domain ``domid``'s console on ``port`` (default: the base plus the id) and
        attach it to ``channel``, the domain's console channel (the Domain actor opened it;
        the console owns it from here); a console the domain already has is only
        re-attached (after a restart, the channel is the new domain's). A new domain's
        console whose TCP port is busy fails its build (Conflict); a ``running`` one's
        (recovered, restored, migrated in) opens without it and tries it again."""
        port = port or self.port_base + domid
        created, info = self._on_loop(self._open(domid, channel, port, running))
        if created:
            log.info("Created console id=%s domain=%s port=%s", port, domid, port)
            self._publish("xend.console.create", [str(port), str(domid), str(port)])
        return info

    def close(self, domid: int) -> None:
        """The domain is gone for good: close its console, if it has one."""
        self._on_loop(self._close(domid))

    def prune(self) -> int:
        """xend has recovered its domains: delete every scrollback's file that no open
        console claimed (their domains died while xend was away); how many."""
        return self._on_loop(self._prune())

    # --- asked by the DomainTable and the web ---------------------------------------------------

    def view(self) -> ConsoleView:
        """The view the web reads the live consoles' infos from, without asking."""
        return self._view

    def of_domain(self, domid: int) -> ConsoleInfo | None:
        return self._on_loop(self._of_domain(domid))

    def of_domains(self) -> dict[int, ConsoleInfo]:
        return self._on_loop(self._of_domains())

    def infos(self) -> list[ConsoleInfo]:
        """Every open console, by port."""
        return sorted(self._on_loop(self._of_domains()).values(), key=lambda i: i.port)

    def output_totals(self) -> dict[int, int]:
        """The bytes each live console's guest has written, by domain id (its
        scrollback's offset, which goes on across a restart of xend)."""
        return self._on_loop(self._output_totals())

    def info(self, port: int) -> ConsoleInfo:
        """The console on ``port``, open or closed."""
        return self._on_loop(self._info(port))

    def attach(self, port: int, sock: socket.socket, peer: tuple[str, int],
               on_end: Callable[[], None]) -> bool:
        """Make ``sock``, a connection upgraded to a WebSocket, a client of the console on
        ``port``; ``peer`` is who it is. False if it was refused, as a second client is
        (it gets the refusal line and the close). The console owns ``sock`` from here,
        whatever the answer; ``on_end`` is called (on the loop) once it has ended."""
        return self._on_loop(self._attach_client(port, sock, peer, on_end))

    def disconnect(self, port: int) -> None:
        """Drop the client of the console on ``port``."""
        self._on_loop(self._disconnect(port))

    def read(self, port: int, since: int,
             wait: float = 0.0) -> concurrent.futures.Future[tuple[ConsoleInfo, LogSlice]]:
        """The console on ``port`` and its scrollback after offset ``since``, waiting up to
        ``wait`` s for output if there is none yet. Answers at once with a future, so a
        long poll holds no actor."""
        return asyncio.run_coroutine_threadsafe(self._read(port, since, wait), self._loop)

    # --- on the loop ------------------------------------------------------------------------------

    async def _open(self, domid: int, channel: socket.socket, port: int,
                    running: bool) -> tuple[bool, ConsoleInfo]:
        """``open`` on the loop, in one trip: whether the console is new, and its info."""
        try:
            created = await self._listen(domid, port, running)
        except BaseException:
            channel.close()
            raise
        try:
            info = await self._attach(domid, channel)
        except BaseException:
            if created:  # a console that never worked leaves nothing behind
                await self._discard(domid)
            raise
        return created, info

    async def _listen(self, domid: int, port: int, retry: bool) -> bool:
        """Make the domain's console listen unless it does; whether it is new."""
        if domid in self._live:
            return False
        held = self._by_port.get(port)
        if held is not None and held.status is not Status.CLOSED:  # a TCP bind would say so
            raise Conflict(f"console port in use: {port}")
        relay = Relay(port, domid, functools.partial(self._relay_said, domid), self._keep)
        try:
            await relay.listen(self.host, retry=retry)
        except BaseException:
            relay.forget_file()
            relay.shut()
            raise
        self._live[domid] = relay
        self._show(domid)
        if port in self._closed:
            self._closed.remove(port)
        self._by_port[port] = relay
        return True

    async def _attach(self, domid: int, channel: socket.socket) -> ConsoleInfo:
        relay = self._live.get(domid)
        if relay is None:
            channel.close()
            raise NotFound(f"domain {domid} has no console")
        await relay.attach(channel)
        self._show(domid)
        return relay.info()

    async def _discard(self, domid: int) -> None:
        relay = self._live.pop(domid)
        self._show(domid)
        relay.forget_file()
        relay.shut()
        del self._by_port[relay.port]

    async def _close(self, domid: int) -> None:
        relay = self._live.pop(domid, None)
        if relay is None:
            return
        self._show(domid)
        relay.close()
        self._closed.append(relay.port)
        while len(self._closed) > CLOSED_KEPT:
            del self._by_port[self._closed.popleft()]

    async def _of_domain(self, domid: int) -> ConsoleInfo | None:
        relay = self._live.get(domid)
        return relay.info() if relay is not None else None

    async def _of_domains(self) -> dict[int, ConsoleInfo]:
        return {domid: relay.info() for domid, relay in self._live.items()}

    async def _output_totals(self) -> dict[int, int]:
        return {domid: relay.scrollback.end for domid, relay in self._live.items()}

    async def _info(self, port: int) -> ConsoleInfo:
        return self._relay(port).info()

    async def _attach_client(self, port: int, sock: socket.socket, peer: tuple[str, int],
                             on_end: Callable[[], None]) -> bool:
        try:
            relay = self._relay(port)
        except NotFound:
            sock.close()
            raise
        return await relay.adopt(sock, WebSocketClient(relay, peer, on_end))

    async def _disconnect(self, port: int) -> None:
        self._relay(port).disconnect()

    async def _read(self, port: int, since: int,
                    wait: float) -> tuple[ConsoleInfo, LogSlice]:
        relay = self._relay(port)
        part = await relay.read(since, wait)
        return relay.info(), part

    async def _prune(self) -> int:
        if self._keep is None:
            return 0
        claimed = {relay.port for relay in self._live.values()}
        pruned = 0
        for name in os.listdir(self._keep):
            found = KEPT_NAME.fullmatch(name)
            if found is not None and int(found.group(1)) not in claimed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._keep / name)
                    pruned += 1
        return pruned

    async def _shut(self) -> None:
        for relay in self._by_port.values():
            relay.shut()

    def _relay(self, port: int) -> Relay:
        relay = self._by_port.get(port)
        if relay is None:
            raise NotFound(f"no console on port {port}")
        return relay

    def _publish(self, name: str, value: sxp.Value) -> None:
        self._events.publish(name, value)

    def _relay_said(self, domid: int, name: str, value: sxp.Value) -> None:
        """A relay's event (a client came or went, it closed): its info changed, and the
        view shows it before the event is out."""
        self._show(domid)
        self._publish(name, value)

    def _show(self, domid: int) -> None:
        """Publish the view with ``domid``'s console as it is now (on the loop)."""
        relay = self._live.get(domid)
        if relay is None:
            self._shown.pop(domid, None)
        else:
            self._shown[domid] = ShownConsole.of(relay.info())
        self._published = self._published.updated(self._shown, (domid,))
        self._view.publish(self._published)

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout=LOOP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Timeout(f"the console loop did not answer within {LOOP_TIMEOUT:g} s") from None


def _keep_folder(folder: Path) -> Path | None:
    """``folder`` made private to xend (0700) for the scrollbacks' files; None (kept in
    memory only) if it cannot be."""
    try:
        for made in (folder.parent, folder):
            made.mkdir(mode=0o700, exist_ok=True)
            if made.is_symlink() or not made.is_dir():
                raise NotADirectoryError(f"not a folder: {made}")
            os.chmod(made, 0o700)
    except OSError as error:
        log.warning("Console scrollbacks are kept in memory only: %s", error)
        return None
    return folder


class ConsolesProxy(ActorMemberMixin, pykka.ActorProxy[Consoles]):
    open = proxy_method(Consoles.open)
    close = proxy_method(Consoles.close)
    prune = proxy_method(Consoles.prune)
    view = proxy_method(Consoles.view)
    of_domain = proxy_method(Consoles.of_domain)
    of_domains = proxy_method(Consoles.of_domains)
    infos = proxy_method(Consoles.infos)
    output_totals = proxy_method(Consoles.output_totals)
    info = proxy_method(Consoles.info)
    attach = proxy_method(Consoles.attach)
    disconnect = proxy_method(Consoles.disconnect)
    read = proxy_method(Consoles.read)
