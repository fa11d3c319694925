"""The daemon: the Root actor and the life of one xend process.

``Root`` starts xend's actors in dependency order, each pinged once before the next
starts (Mopidy's barrier), and stops them in reverse order. ``run`` is the process
around it: logging, the pid file, reboot detection, signals, and a ``ready``
callback that tells whoever launched xend whether it came up.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

import pykka

from xend_actors.config import XendConfig
from xend_actors.console.hub import Consoles
from xend_actors.debug.server import DebugServer
from xend_actors.device.claims import BlockClaims
from xend_actors.device.network import Network
from xend_actors.device.vnets import Vnets
from xend_actors.domain.domain import DeviceServices
from xend_actors.domain.table import DomainTable
from xend_actors.events.bus import EventBus
from xend_actors.hypervisor.actor import Hypervisor, open_driver
from xend_actors.logs import setup_logging
from xend_actors.notify import Notifier
from xend_actors.pidfile import PidFile
from xend_actors.store import Store, detect_host_reboot
from xend_actors.trace import TracedActor
from xend_actors.transfer.transfer import Transfer
from xend_actors.web.routes import make_app
from xend_actors.web.server import WebServer
from xend_actors.web.services import Services, answer

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Root(TracedActor):
    """Starts, supervises and stops every other actor of xend."""

    def __init__(self, config: XendConfig, store: Store,
                 shutdown: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self.shutdown = shutdown  # stops the whole process: the debug port's (exit)
        self._children: list[tuple[str, pykka.ActorRef]] = []

    def boot(self) -> list[str]:
        """Start the actors; on any failure stop those already started and raise."""
        try:
            events = self._adopt("events", EventBus.start(self.store.dbroot / "events")).proxy()
            answer(events.last_seq(), "the event bus")
            notifier_ref = self._adopt("notify", Notifier.start(
                self.config.hosts_allow, self.store.dbroot / "notify"))
            answer(events.subscribe(notifier_ref, "*"), "the event bus")
            notifier = notifier_ref.proxy()
            # Before the domains: their vifs go on the vnets' bridges.
            vnets = self._adopt("vnets", Vnets.start(self.store.vnet, events)).proxy()
            log.info("Vnets kept in the store: %d",
                     answer(vnets.recover(), "the vnets", BOOT_TIMEOUT))
            driver = open_driver(self.config)
            hypervisor = self._adopt("hypervisor", Hypervisor.start(driver)).proxy()
            consoles = self._adopt("consoles", Consoles.start(self.config, driver, events)).proxy()
            network = self._adopt("network", Network.start(self.config)).proxy()
            answer(network.start_network(), "the network", BOOT_TIMEOUT)
            claims = self._adopt("claims", BlockClaims.start()).proxy()
            devices = DeviceServices(self.config, claims, network)
            table = self._adopt("domains", DomainTable.start(
                self.config, driver, events, self.store, consoles, devices)).proxy()
            answer(hypervisor.watch(table), "the hypervisor")
            count = answer(table.recover(), "the domain table", BOOT_TIMEOUT)
            log.info("Domains recovered or adopted: %d", count)
            transfer = self._adopt("transfer", Transfer.start(
                driver, table, events, self.store.migrate, self.config)).proxy()
            answer(transfer.ping(), "the transfer actor")
            relocation = answer(transfer.start_relocation(), "the transfer actor")
            services = Services(self.config, events, hypervisor, table, notifier=notifier,
                                consoles=consoles, vnets=vnets, transfer=transfer)
            web = self._adopt("web", WebServer.start(self.config, make_app(services)))
            addresses = answer(web.proxy().addresses(), "the web server")
            debug = self._adopt("debug", DebugServer.start(
                self.config, events, self.shutdown, consoles))
            addresses.append(answer(debug.proxy().address(), "the debug server"))
            if relocation:
                addresses.append(f"xfr://{relocation}")
        except BaseException:
            self._stop_children()
            raise
        events.publish("xend.start", "0")
        return addresses

    def on_stop(self) -> None:
        self._stop_children()

    def _adopt(self, name: str, ref: pykka.ActorRef) -> pykka.ActorRef:
        self._children.append((name, ref))
        return ref

    def _stop_children(self) -> None:
        while self._children:
            name, ref = self._children.pop()
            try:
                ref.stop(block=True, timeout=STOP_TIMEOUT)
            except pykka.Timeout:
                log.error("Actor %s did not stop within %g s", name, STOP_TIMEOUT)


def run(config: XendConfig, *, foreground: bool,
        ready: Callable[[str | None], None] = lambda _error: None) -> int:
    """Run xend until a stop signal; ``ready(None)`` once it serves, ``ready(error)`` if not."""
    setup_logging(config.logfile, config.loglevel, to_stderr=foreground)
    for warning in config.warnings:
        log.warning("%s", warning)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    pidfile = PidFile(config.pid_file)
    try:
        pidfile.acquire()
        config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = Store(config.dbroot)
        if detect_host_reboot(store, config.run_dir / "state"):
            log.info("The host has rebooted since xend last ran: runtime state dropped")
        root = Root.start(config, store, stop.set)
    except Exception as error:
        log.error("Xend failed to start: %s", error)
        pidfile.release()
        ready(str(error))
        return 1
    try:
        addresses = answer(root.proxy().boot(), "xend start-up", BOOT_TIMEOUT)
    except Exception as error:
        log.error("Xend failed to start: %s", error)
        root.stop()
        pidfile.release()
        ready(str(error))
        return 1
    log.info("Xend Daemon started on %s", ", ".join(addresses))
    ready(None)
    while not stop.wait(1.0):
        pass
    log.info("Xend Daemon stopping")
    try:
        root.stop(block=True, timeout=STOP_TIMEOUT * 2)
    finally:
        pidfile.release()
    log.info("Xend Daemon stopped")
    return 0
