"""A whole xend in this process, on a simulated host in a thread: its actors, no processes.

``xend_in_process`` starts xend-simhv's model and server on an asyncio loop in a thread
of the test process, then xend's Root actor with every actor below it, as ``xend
start`` would but without forking, the pid file or signals. Tests then ask the actors
through their typed proxies, or speak HTTP to the web server (bound to a free port), and
read events from the EventBus itself. Starting one takes tens of milliseconds, where a
xend process takes a second: for tests of what the actors do, a process adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pykka

from tests.support.ports import free_port_base
from xend_actors import sxp
from xend_actors.actors import ask, proxy_of
from xend_actors.config import XendConfig, parse_config
from xend_actors.daemon import Root, RootProxy
from xend_actors.domain.config import parse_domain_config
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.record import DomainInfo
from xend_actors.domain.table import DomainTable, DomainTableProxy
from xend_actors.events.bus import EventBus, EventBusProxy, QueueSubscriber
from xend_actors.events.event import Event
from xend_actors.hypervisor.sim.model import SimHypervisor
from xend_actors.hypervisor.sim.server import SimServer
from xend_actors.store import Store

KERNEL = "/boot/vmlinuz-sim"

T = TypeVar("T")


class SimHost:
    """xend-simhv's model and server on an event loop in a thread, on ``socket_path``."""

    def __init__(self, socket_path: Path, memory_mb: int = 8192, cpus: int = 4) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="simhv",
                                        daemon=True)
        self._thread.start()
        self.hv = self.call(lambda: SimHypervisor(memory_mb, cpus, self.loop))
        self.server = self.call(lambda: SimServer(self.hv))
        self.listener = asyncio.run_coroutine_threadsafe(
            self.loop.create_unix_server(self.server.connection, str(socket_path)),
            self.loop).result(timeout=10)

    def call(self, work: Callable[[], T]) -> T:
        """``work()`` run on the model's loop, where the model lives; its result."""
        async def run() -> T:
            return work()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def close(self) -> None:
        self.call(self.listener.close)
        self.call(self.server.close)
        self.call(self.hv.net.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class InProcessXend:
    """One xend's actors and its simulated host; events as they come."""

    def __init__(self, root: Path, config: XendConfig, host: SimHost) -> None:
        self.root = root
        self.config = config
        self.host = host
        self.seen: list[Event] = []
        self._seen_seqs: set[int] = set()
        self._events = QueueSubscriber()
        self._ref: pykka.ActorRef[Any] | None = None

    def start(self) -> None:
        """Start xend's actors on the store and the host, as ``xend start`` does."""
        self._ref = Root.start(self.config, Store(self.config.dbroot))
        ask(proxy_of(self._ref, RootProxy).boot(), "xend start-up", 30)
        self.table = proxy_of(_only(DomainTable), DomainTableProxy)
        self.view = ask(self.table.view())
        self.events = proxy_of(_only(EventBus), EventBusProxy)
        self._events = QueueSubscriber()
        ask(self.events.subscribe(self._events, "*"))
        # What was published while xend started (recovering domains, say), from the log.
        self._seen_seqs = {event.seq for event in self.seen}
        self._add(ask(self.events.since(0, 10_000)))

    def stop(self) -> None:
        """Stop every actor, as ``xend stop`` does; the host's domains run on."""
        if self._ref is not None:
            self._ref.stop(block=True, timeout=30)
            self._ref = None
        self._drain()

    def restart(self) -> None:
        self.stop()
        self.start()

    def create(self, name: str, *extra: sxp.Value, memory: int = 32) -> DomainInfo:
        """Create and build a domain as ``POST op=create`` does; its info (paused)."""
        config = parse_domain_config(["vm", ["name", name], ["memory", str(memory)],
                                      ["image", ["linux", ["kernel", KERNEL]]], *extra])
        domain = ask(self.table.create(config))
        record = ask(domain.build())
        return ask(self.table.info(str(record.domid)))

    def domain(self, dom: str) -> DomainProxy:
        return ask(self.table.find(dom))

    def info(self, dom: str) -> DomainInfo:
        return ask(self.table.info(dom))

    def names(self) -> list[str]:
        return ask(self.table.names())

    def type_on_console(self, domid: int, line: str) -> None:
        """What a user at the guest's console types (``reboot``, ``crash``, ``poweroff``)."""
        self.host.call(lambda: self.host.hv.console(domid).type(line.encode() + b"\r"))

    def hv_state(self, domid: int) -> str:
        return self.host.call(lambda: self.host.hv.domain(domid).state.letters)

    def wait_event(self, name: str, value: sxp.Value | None = None,
                   timeout: float = 10.0) -> Event:
        """The first event named ``name`` (with ``value``) since the start, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if event.name == name and (value is None or event.value == value):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                shown = "\n".join(f"{e.name} {sxp.show(e.value)}" for e in self.seen)
                raise AssertionError(f"no event {name} {sxp.show(value or '')} within "
                                     f"{timeout:g} s; seen:\n{shown}")
            with contextlib.suppress(queue.Empty):
                self._add([self._events.events.get(timeout=min(left, 0.1))])

    def events_named(self, name: str) -> list[sxp.Value]:
        self._drain()
        return [event.value for event in self.seen if event.name == name]

    def _drain(self) -> None:
        while True:
            try:
                self._add([self._events.events.get_nowait()])
            except queue.Empty:
                return

    def _add(self, events: list[Event]) -> None:
        for event in events:
            if event.seq not in self._seen_seqs:
                self._seen_seqs.add(event.seq)
                self.seen.append(event)


def _only(kind: type[pykka.Actor]) -> pykka.ActorRef[Any]:
    """The one running actor of ``kind`` (tests start one xend at a time)."""
    refs = pykka.ActorRegistry.get_by_class(kind)
    assert len(refs) == 1, f"{len(refs)} {kind.__name__} actors run"
    return refs[0]


@contextlib.contextmanager
def xend_in_process(extra: str = "", memory_mb: int = 8192) -> Iterator[InProcessXend]:
    """A started in-process xend with the test defaults, on a host of ``memory_mb``;
    stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="xend-ip-"))
    run_dir = root / "run"
    run_dir.mkdir(mode=0o700)
    # Written as a file too: a process xend starts (a pool's fencing watchdog) reads it.
    config_file = root / "xend-config.sxp"
    config_file.write_text(
        f"{extra}\n(xend-port 0)\n(xend-address 127.0.0.1)\n(xend-event-port 0)\n"
        f"(console-port-base {free_port_base(span=32)})\n(console-address 127.0.0.1)\n"
        f"(xend-run-dir {run_dir})\n(dbroot {root / 'db'})\n(logfile {root / 'xend.log'})\n"
        "(vif-bridge null)\n(sim-taps no)\n")
    config = parse_config(config_file.read_text(), config_file)
    host = SimHost(run_dir / "simhv.sock", memory_mb)
    xend = InProcessXend(root, config, host)
    try:
        xend.start()
        yield xend
    finally:
        xend.stop()
        host.close()
        shutil.rmtree(root, ignore_errors=True)


HELD = 30.0  # how long a held step waits for the test to let it go: past every deadline here


class Gate:
    """A step that waits, once entered, until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        self.go.wait(HELD)
