"""The daemon: the Root actor and the life of one xend process.

``Root`` starts xend's actors in dependency order, each pinged once before the next
starts (Mopidy's barrier), and stops them in reverse order. It supervises them as an
OTP supervisor with the one-for-all strategy: they hold each other's proxies, so when
one dies (pykka stops an actor whose told message raised) Root stops the others and
boots them all again, from the store, as a restart of xend would. ``run`` is the process
around it: logging, the pid file, reboot detection, signals, and a ``ready``
callback that tells whoever launched xend whether it came up. A start that fails leaves
nothing running that it started (an xend-simhv it launched is stopped again), and a
start writes nothing that has not changed, so a full disk does not stop it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.access.ratelimit import FailureLimiter
from xend_actors.access.revocations import Revocations
from xend_actors.access.sessions import Sessions
from xend_actors.access.tokens import Tokens
from xend_actors.actors import ask, proxy_of
from xend_actors.config import XendConfig
from xend_actors.console.hub import Consoles, ConsolesProxy
from xend_actors.debug.server import DebugServer, DebugServerProxy
from xend_actors.device.claims import BlockClaims, BlockClaimsProxy
from xend_actors.device.network import Network, NetworkProxy
from xend_actors.device.scripts import check_scripts
from xend_actors.device.vnets import Vnets, VnetsProxy
from xend_actors.domain.devices import DeviceServices
from xend_actors.domain.domain import DomainServices
from xend_actors.domain.sampler import Sampler, SamplerProxy
from xend_actors.domain.samples import Samples
from xend_actors.domain.table import DomainTable, DomainTableProxy
from xend_actors.errors import XendError
from xend_actors.events.bus import EventBus, EventBusProxy
from xend_actors.events.notify import Notifier, NotifierProxy
from xend_actors.hypervisor.actor import (
    Hypervisor,
    HypervisorProxy,
    helper_starter,
    open_driver,
)
from xend_actors.limits import raise_open_files, spread_futexes
from xend_actors.logs import setup_logging
from xend_actors.pidfile import PidFile
from xend_actors.pool.member import PoolMember, PoolMemberProxy
from xend_actors.pool.opening import membership, open_pool
from xend_actors.pool.view import PoolReader
from xend_actors.pool.watchdog_protocol import socket_path as fence_socket
from xend_actors.store import Store, detect_host_reboot
from xend_actors.trace import TracedActor
from xend_actors.transfer.transfer import Transfer, TransferProxy
from xend_actors.web import memory
from xend_actors.web.gate import Keys
from xend_actors.web.routes import lingers, make_app
from xend_actors.web.server import WebServer, WebServerProxy
from xend_actors.web.services import Services

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 60.0
BARRIER_TIMEOUT = 10.0  # a ping of an actor just started
STOP_TIMEOUT = 30.0
WATCH_SECONDS = 1.0  # how often Root looks at its children

P = TypeVar("P")


def _nothing() -> None:
    pass


class Root(TracedActor):
    """Starts, supervises and stops every other actor of xend."""

    def __init__(self, config: XendConfig, store: Store,
                 shutdown: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self.shutdown = shutdown  # stops the whole process: the debug port's (exit)
        self._children: list[tuple[str, pykka.ActorRef[Any]]] = []
        self._stopping = threading.Event()

    def on_start(self) -> None:
        me = proxy_of(self.actor_ref, RootProxy)
        threading.Thread(target=self._watch, args=(me,), name="root-watch",
                         daemon=True).start()

    def _watch(self, me: RootProxy) -> None:
        while not self._stopping.wait(WATCH_SECONDS):
            try:
                me.restart_if_dead().get()
            except pykka.ActorDeadError:
                return
            except Exception:
                log.exception("Restarting xend's actors failed; xend stops")
                self.shutdown()
                return

    def restart_if_dead(self) -> None:
        """If a child died, stop the others and boot them all again (one for all)."""
        dead = [name for name, ref in self._children if not ref.is_alive()]
        if not dead or self._stopping.is_set():
            return
        log.error("Actor %s died; restarting all of xend's actors from the store",
                  ", ".join(dead))
        self._stop_children()
        self.boot()

    def boot(self) -> list[str]:
        """Start the actors; on any failure stop those already started and raise."""
        config, store = self.config, self.store
        undo_driver = _nothing  # stops a hypervisor this start launched, if it fails
        try:
            events = self._start("events", EventBus.start(store.dbroot / "events"),
                                 EventBusProxy)
            ask(events.last_seq(), "the event bus", BARRIER_TIMEOUT)
            notifier = self._start("notify", Notifier.start(
                config.hosts_allow, store.dbroot / "notify"), NotifierProxy)
            ask(events.subscribe(notifier.actor_ref, "*"), "the event bus", BARRIER_TIMEOUT)
            network = self._start("network", Network.start(config), NetworkProxy)
            # Before the domains: their vifs go on the vnets' bridges.
            vnets = self._start("vnets", Vnets.start(store.vnet, network, events), VnetsProxy)
            log.info("Vnets kept in the store: %d", ask(vnets.recover(), "the vnets",
                                                        BOOT_TIMEOUT))
            driver, undo_driver = open_driver(config)
            hypervisor = self._start("hypervisor", Hypervisor.start(
                driver, helper_starter(config)), HypervisorProxy)
            consoles = self._start("consoles", Consoles.start(config, events), ConsolesProxy)
            ask(network.start_network(), "the network", BOOT_TIMEOUT)
            claims = self._start("claims", BlockClaims.start(), BlockClaimsProxy)
            services = DomainServices(
                driver=driver, events=events, consoles=consoles, records=store.domain,
                devices=DeviceServices(config, claims, network),
                minimum_restart_time=config.minimum_restart_time)
            pool = open_pool(config)
            if pool is None and fence_socket(config).exists():
                # A pool member's watchdog left here: this xend left the pool. Imported
                # only then: a xend that was never in a pool loads none of it.
                from xend_actors.pool.watchdog_client import disarm_left_over

                disarm_left_over(config)
            table = self._start("domains", DomainTable.start(
                hypervisor, consoles, services, store.intent,
                pool.names if pool else None), DomainTableProxy)
            ask(hypervisor.watch(table), "the hypervisor", BARRIER_TIMEOUT)
            count = ask(table.recover(), "the domain table", BOOT_TIMEOUT)
            view = ask(table.view(), "the domain table", BARRIER_TIMEOUT)
            log.info("Domains recovered or adopted: %d", count)
            # After the recovery: what no recovered console claimed is of dead domains.
            ask(consoles.prune(), "the consoles", BARRIER_TIMEOUT)
            samples = Samples(config.sample_interval, config.samples_kept)
            self._start("sampler", Sampler.start(samples, hypervisor, consoles, view),
                        SamplerProxy)
            transfer = self._start("transfer", Transfer.start(
                driver, table, events, store.migrate, config), TransferProxy)
            ask(transfer.ping(), "the transfer actor", BARRIER_TIMEOUT)
            relocation = ask(transfer.start_relocation(), "the transfer actor", BARRIER_TIMEOUT)
            revocations = Revocations()
            keys = Keys(Tokens(store.token, revocations),
                        Sessions(config.session_lifetime, revocations=revocations),
                        FailureLimiter(), revocations, pool.token if pool else None)
            reader = PoolReader(pool.etcd, pool.keys, pool.me) if pool else None
            web_services = Services(config, events, hypervisor, table, notifier=notifier,
                                    consoles=consoles, vnets=vnets, view=view,
                                    transfer=transfer, keys=keys, samples=samples,
                                    pool=pool, pool_view=reader)
            web = self._start("web", WebServer.start(
                config, make_app(web_services), keys, lingers), WebServerProxy)
            addresses = ask(web.addresses(), "the web server", BARRIER_TIMEOUT)
            debug = self._start("debug", DebugServer.start(
                config, events, self.shutdown, consoles), DebugServerProxy)
            debug_addresses = ask(debug.addresses(), "the debug server", BARRIER_TIMEOUT)
            addresses += debug_addresses
            if pool is not None:
                member = self._start("pool", PoolMember.start(
                    membership(config, pool, addresses), pool.etcd, pool.names, table, view,
                    hypervisor, events), PoolMemberProxy)
                ask(events.subscribe(member.actor_ref, "xend.domain.*"), "the event bus",
                    BARRIER_TIMEOUT)
                member.join()  # etcd may be unreachable now: xend starts all the same
                if reader is not None:  # a pool of thousands: the first read is the long one
                    threading.Thread(target=reader.warm, name="pool-warm", daemon=True).start()
            if relocation:
                addresses.append(f"xfr://{relocation}")
        except BaseException:
            self._stop_children()
            undo_driver()
            raise
        events.publish("xend.start", "0")
        return addresses

    def on_stop(self) -> None:
        self._stopping.set()
        self._leave_pool()
        self._stop_children()

    def _leave_pool(self) -> None:
        """xend stops (not a restart of its actors): a pool member leaves first."""
        for name, ref in self._children:
            if name == "pool" and ref.is_alive():
                try:
                    ask(proxy_of(ref, PoolMemberProxy).leave_pool(), "the pool member",
                        STOP_TIMEOUT + self.config.destroy_timeout)
                except XendError as error:  # its watchdog fences at its deadline
                    log.error("Leaving the pool: %s", error.message)

    def _start(self, name: str, ref: pykka.ActorRef[Any], kind: type[P]) -> P:
        """Keep ``ref`` to stop it in reverse order; its proxy, typed as ``kind``."""
        self._children.append((name, ref))
        return proxy_of(ref, kind)

    def _stop_children(self) -> None:
        while self._children:
            name, ref = self._children.pop()
            try:
                ref.stop(block=True, timeout=STOP_TIMEOUT)
            except pykka.Timeout:
                log.error("Actor %s did not stop within %g s", name, STOP_TIMEOUT)


class RootProxy(ActorMemberMixin, pykka.ActorProxy[Root]):
    boot = proxy_method(Root.boot)
    restart_if_dead = proxy_method(Root.restart_if_dead)


def run(config: XendConfig, *, foreground: bool,
        ready: Callable[[str | None], None] = lambda _error: None) -> int:
    """Run xend until a stop signal; ``ready(None)`` once it serves, ``ready(error)`` if not."""
    memory.limit_arenas()  # before the threads: each would take an arena of its own
    setup_logging(config.logfile, config.loglevel, to_stderr=foreground)
    log.info("Xend may open %d files (each domain takes a few)", raise_open_files())
    if not spread_futexes():
        log.debug("No private futex hash to widen: this kernel hashes futexes globally")
    for warning in config.warnings:
        log.warning("%s", warning)
    if not config.http_auth:
        log.warning("(xend-http-auth no): HTTP clients over TCP are not asked who they are; "
                    "any client xend-hosts-allow lets in may do anything")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    pidfile = PidFile(config.pid_file)
    try:
        for warning in check_scripts(config):
            log.warning("%s", warning)
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
        addresses = ask(proxy_of(root, RootProxy).boot(), "xend start-up", BOOT_TIMEOUT)
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
