"""The Relocation actor: the relocation port, where other xends migrate domains in.

It is started by the Transfer actor when ``xend-relocation-server`` is yes and listens
on ``xend-relocation-address``:``xend-relocation-port``. Each accepted connection is
served on a thread of its own, so a transfer never holds up another, nor xend's HTTP:
there its TLS handshake is made (``xfr/tls.py``: the peer's certificate must verify
against ``xend-relocation-tls-ca``; a handshake that fails or does not finish in a few
seconds is logged and closed), then it speaks the xfr conversation of ``xfr/`` as the
destination. A peer whose certificate names none that ``xend-relocation-hosts-allow``
admits (each matched as ``xend-hosts-allow`` matches an address; an empty list admits
any certificate the CA signed) gets ``(xfr.err 13 ...)`` and is closed. Without the
TLS files it does not start, unless ``(xend-relocation-tls no)``: then connections are
plain TCP, and the peer's address is matched instead, as the original did.

The destination checks the name and the memory before a page flows, takes the pages
in (the sim's memory is a pattern: the pages are checked against the digest the source
sends and not kept; the seed and page versions come in the state), builds the domain
paused from the final state and brings it up as a restore does (``bringup``: adopted,
configured, devices and console), answers ``(xfr.xfr.ok NEWID)`` and unpauses it only on
the source's commit. Whatever breaks before that destroys what it built. A stream
driver's offer (qemu) is answered as soon as its checks pass, and its state is copied
from the connection into a pipe from then on (``Inflow``), while the domain is made;
the hypervisor loads from that pipe once it is up (one with devices once they are
plugged in; one without while it is adopted and configured), and the domain runs as
soon as the stream's end has come and the hypervisor has loaded all of it; only then is
the source told
``(xfr.xfr.ok NEWID)``, and it destroys its stopped copy on that word
(``outgoing._send_stream`` says why that is safe). While it is made, the transfer is
recorded as ``migrate/in-N`` in the store, so a xend killed mid-way destroys the
half-built domain when it starts again (``Transfer`` reads the record); the record goes
once the domain runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.access.hosts import client_allowed
from xend_actors.actors import ASK_TIMEOUT, Deadline, ask, is_bug
from xend_actors.config import XendConfig
from xend_actors.domain.config import DomainConfig, check_new_domain, parse_domain_config
from xend_actors.domain.table import DomainTableProxy
from xend_actors.errors import Conflict, XendError
from xend_actors.hypervisor.base import StreamState
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor
from xend_actors.transfer import records, rollback, xfr
from xend_actors.transfer.background import Background
from xend_actors.transfer.bringup import bring_up, intended
from xend_actors.transfer.context import Leftovers
from xend_actors.transfer.drivers import MovableDriver, PagedDriver, StreamDriver
from xend_actors.transfer.moving import Moving
from xend_actors.transfer.records import (
    INCOMING_PREFIX,
    Destination,
    MigrateRecord,
    SessionState,
    Source,
)
from xend_actors.transfer.xfr import tls

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 30.0  # the most a peer may stay silent mid-transfer
COMMIT_TIMEOUT = 60.0  # a sim source destroys its domain before it commits
MAX_CONNECTIONS = 8
MAX_ROUNDS = 8  # a source may send the memory at most this many times over
# The most of a stream's state a destination holds before its hypervisor takes it (kernel
# pages of a pipe, taken as they fill and given back as the hypervisor reads).
INFLOW_PIPE_SIZE = 4 << 20


@dataclass(frozen=True)
class Incoming:
    """What the destination needs from its xend to take a domain in."""

    driver: MovableDriver
    table: DomainTableProxy
    sessions: RecordDir
    moving: Moving  # the transfer sessions' own: one name is moved by one at a time
    failed: Callable[[Leftovers], object]  # told what a migration in a bug ended left


class Relocation(TracedActor):
    def __init__(self, config: XendConfig, incoming: Incoming) -> None:
        super().__init__()
        self._patterns = config.relocation_hosts_allow
        self._incoming = incoming
        self._tls = tls.files(config, "a relocation server (xend-relocation-server yes)")
        address = config.relocation_address or "0.0.0.0"
        try:
            self._listener = socket.create_server((address, config.relocation_port),
                                                  backlog=16)
        except OSError as error:
            raise XendError(f"cannot listen for relocation on {address}:"
                            f"{config.relocation_port}: {error.strerror or error}") from None
        self._where = f"{address}:{config.relocation_port}"
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        keys = incoming.sessions.keys()  # a RecordDir's, not a dict's
        numbers = [k.removeprefix(INCOMING_PREFIX) for k in keys if k.startswith(INCOMING_PREFIX)]
        self._sessions = itertools.count(
            1 + max((int(n) for n in numbers if n.isdigit()), default=0))
        self._thread = threading.Thread(target=self._accept, name="relocation", daemon=True)

    def on_start(self) -> None:
        self._thread.start()
        log.info("Relocation server listening on %s", self._where)

    def on_stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def address(self) -> str:
        return self._where

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # closed: xend stops
            with self._lock:
                busy = len(self._connections) >= MAX_CONNECTIONS
                if not busy:
                    self._connections.add(sock)
            if busy:
                log.warning("Refused a migration from %s: %d at once already", peer[0],
                            MAX_CONNECTIONS)
                # Over TLS the refusal could be said only after a handshake: closed.
                _refuse(sock, None if self._tls else xfr.Err(
                    xfr.Code.EIO, "too many migrations at once; try later"))
                continue
            threading.Thread(target=self._serve, args=(sock, peer[0]), daemon=True,
                             name=f"relocation {peer[0]}").start()

    def _serve(self, sock: socket.socket, address: str) -> None:
        connection = sock
        try:
            connection = self._secure(sock)
            channel = xfr.Channel(connection, f"relocation peer {address}", IDLE_TIMEOUT)
            try:
                refusal = self._refusal(channel, address)
                if refusal:
                    log.warning("Refused a migration: %s", refusal)
                    channel.send(xfr.Err(xfr.Code.EACCES, refusal))
                    tls.close_gently(channel.sock)
                    return
                session = f"{INCOMING_PREFIX}{next(self._sessions)}"
                receive(channel, address, session, self._incoming)
            finally:
                channel.close()
        except XendError as error:
            log.error("Migration in from %s failed: %s", address, error.message)
        except Exception:
            log.exception("Migration in from %s failed", address)
        finally:
            with self._lock:
                self._connections.discard(connection)

    def _secure(self, sock: socket.socket) -> socket.socket:
        """The connection over TLS once its handshake is done (in ``_connections`` in
        place of ``sock``, for ``on_stop`` to shut it down), or ``sock`` without TLS."""
        if self._tls is None:
            return sock
        secured = tls.accept(self._tls, sock)
        with self._lock:
            self._connections.discard(sock)
            self._connections.add(secured)
        return secured

    def _refusal(self, channel: xfr.Channel, address: str) -> str:
        """Why the peer at ``address`` may not migrate here, or '' if it may."""
        if not isinstance(channel.sock, ssl.SSLSocket):
            if client_allowed(address, self._patterns):
                return ""
            return f"{address} is not allowed to migrate here by xend-relocation-hosts-allow"
        names = tls.names(channel.sock.getpeercert() or {})
        log.info("Relocation peer %s presents a certificate for %s", address,
                 ", ".join(names) or "no name")
        if not self._patterns or any(client_allowed(name, self._patterns) for name in names):
            return ""
        return (f"{address} is not allowed to migrate here by xend-relocation-hosts-allow: "
                f"its certificate names {', '.join(names) or 'nothing'}")


class RelocationProxy(ActorMemberMixin, pykka.ActorProxy[Relocation]):
    address = proxy_method(Relocation.address)


def receive(channel: xfr.Channel, address: str, session: str, incoming: Incoming) -> int:
    """Take in the domain a source offers on ``channel``; its new id once it runs."""
    hello = channel.receive()
    if not isinstance(hello, xfr.Hello) or (hello.major, hello.minor) != xfr.VERSION:
        channel.send(xfr.Err(xfr.Code.EINVAL, "expected (xfr.hello 1 0)"))
        raise xfr.XfrError(f"{address} did not say (xfr.hello 1 0)", xfr.Code.EINVAL)
    channel.send(xfr.OK)
    offer = channel.receive()
    if not isinstance(offer, xfr.Xfr):
        channel.send(xfr.Err(xfr.Code.EPROTO, "expected (xfr.xfr ...)"))
        raise xfr.XfrError(f"{address} sent {type(offer).__name__}, not xfr.xfr",
                           xfr.Code.EPROTO)
    try:
        config = _check_offer(offer, incoming)  # its name held from here
    except xfr.XfrError as error:
        channel.send(xfr.Err(error.code, error.message))
        raise
    try:
        return _take_in(channel, address, session, incoming, offer, config)
    except BaseException as error:
        if is_bug(error):
            # What it made cannot be trusted to be undone here: the Transfer actor
            # puts back what the record says, then frees the name.
            incoming.failed(Leftovers((session,), (config.name,)))
        else:
            incoming.moving.release(config.name)
        raise


def _take_in(channel: xfr.Channel, address: str, session: str, incoming: Incoming,
             offer: xfr.Xfr, config: DomainConfig) -> int:
    driver = incoming.driver
    record = MigrateRecord(session, SessionState.RECEIVE, offer.live,
                           Source(address, offer.domid), Destination(socket.gethostname()))
    bug = False
    try:
        if isinstance(driver, StreamState):
            domid = _take_stream(channel, address, incoming, record, offer, config, driver)
            # It runs: a xend that starts again keeps it (the record would destroy it).
            incoming.sessions.delete(session, sync=records.durable(record))
            _confirm(channel, address, domid)
        else:
            domid = _take_pages(channel, address, incoming, record, offer, config, driver)
            channel.send(xfr.OK)
    except BaseException as error:
        bug = is_bug(error)
        if isinstance(error, XendError) and (not isinstance(error, xfr.XfrError)
                                             or error.code == xfr.Code.EPROTO):
            code = error.code if isinstance(error, xfr.XfrError) else xfr.Code.EIO
            with contextlib.suppress(XendError):  # the source learns why
                channel.send(xfr.Err(code, error.message))
        raise
    finally:
        if not bug:  # else ``receive`` hands both to the Transfer actor
            # The name first: whoever sees the session gone may take the name at once.
            incoming.moving.release(config.name)
            incoming.sessions.delete(session, sync=records.durable(record))
    log.info("Domain %s migrated in from %s as domain %s", config.name, address, domid)
    return domid


def _take_stream(channel: xfr.Channel, address: str, incoming: Incoming,
                 record: MigrateRecord, offer: xfr.Xfr, config: DomainConfig,
                 driver: StreamDriver) -> int:
    """A stream driver's domain, made, loaded and running; the offer is answered yes
    first, and the state flows in (``Inflow``) while the domain is made."""
    with _inflow(channel, address, offer, driver) as inflow, \
            _making(incoming, address, record, config) as made:
        domid = driver.prepare_incoming(config.name, offer.meta)
        made(domid)
        if not config.devices:
            # Nothing to plug in before the state loads: it loads while the domain is
            # adopted and its console made.
            with rollback.discarded_on_failure(driver, incoming.table, domid):
                inflow.hand(domid)
            bring_up(driver, incoming.table, domid, config, Deadline.after,
                     lambda: inflow.loaded(domid))
        else:  # qemu must have its devices before it loads
            bring_up(driver, incoming.table, domid, config, Deadline.after,
                     lambda: inflow.hand_and_load(domid))
    return domid


def _take_pages(channel: xfr.Channel, address: str, incoming: Incoming,
                record: MigrateRecord, offer: xfr.Xfr, config: DomainConfig,
                driver: PagedDriver) -> int:
    """A paged driver's domain, made from its pages and state and brought up paused; it
    runs on the source's commit."""
    channel.send(xfr.OK)  # the pages may come
    with _making(incoming, address, record, config) as made:
        domid = driver.restore_state(config.name, config.memory_mb,
                                     _receive_memory(channel, offer))
        made(domid)
        bring_up(driver, incoming.table, domid, config, Deadline.after,
                 lambda: _commit_pages(channel, domid))
    return domid


@contextlib.contextmanager
def _making(incoming: Incoming, address: str, record: MigrateRecord,
            config: DomainConfig) -> Iterator[Callable[[int], None]]:
    """The session recorded and the name intended while the domain is made inside; what
    it yields records the new domain's id, which is destroyed if that fails."""
    incoming.sessions.write(record.id, records.to_sxpr(record),
                            sync=records.durable(record))
    log.info("Migrating domain %s in from %s", config.name, address)

    def made(domid: int) -> None:
        with rollback.discarded_on_failure(incoming.driver, incoming.table, domid):
            version = replace(record, dst=replace(record.dst, domid=domid))
            incoming.sessions.write(record.id, records.to_sxpr(version),
                                    sync=records.durable(version))

    with intended(incoming.table, config, Deadline.after(ASK_TIMEOUT), address):
        yield made


def _commit_pages(channel: xfr.Channel, domid: int) -> None:
    """The built and configured domain ``domid`` (from pages) may run here: the source is
    told its new id, destroys its own, and the domain runs here on its commit."""
    channel.send(xfr.XfrOk(domid))
    channel.sock.settimeout(COMMIT_TIMEOUT)
    channel.expect_ok("the commit")


def _confirm(channel: xfr.Channel, address: str, domid: int) -> None:
    """Tell the source that the stream driver's domain ``domid`` runs here, so it destroys
    its stopped copy, and hear its last word. The guest runs here whatever is said: a
    source that does not hear it keeps its copy stopped, neither run nor destroyed."""
    try:
        channel.send(xfr.XfrOk(domid))
        channel.sock.settimeout(COMMIT_TIMEOUT)
        channel.expect_ok("the commit")
        channel.send(xfr.OK)
    except XendError as error:
        log.warning("Domain %s runs here, but its source at %s may not know it: %s", domid,
                    address, error.message)


class Inflow:
    """A stream driver's state coming in on a connection before the hypervisor is there
    to load it: the offer is answered yes at once, and the stream is copied from the
    connection into a pipe on a thread of its own; the hypervisor is given the pipe's
    read end once it is ready (``hand``). Until then the pipe holds the stream: the one
    buffer, bounded by its size (``INFLOW_PIPE_SIZE``); once it is full the kernel's
    socket buffers fill, then the source's pipe, and the source's hypervisor waits. So a
    source's first pass over the memory overlaps the destination's hypervisor's start
    and the domain's records, where a bare qemu-to-qemu migration waits for the
    destination to listen. The connection is the copying thread's until ``loaded``."""

    def __init__(self, channel: xfr.Channel, address: str, offer: xfr.Xfr,
                 driver: StreamDriver) -> None:
        self._driver = driver
        read, write = xfr.open_pipe(xend_writes=True, size=INFLOW_PIPE_SIZE)
        try:
            if channel.buffered:
                raise xfr.XfrError(f"{address} sent data before the offer was answered",
                                   xfr.Code.EPROTO)
            channel.send(xfr.OK)
        except BaseException:
            os.close(read)
            os.close(write)
            raise
        self._read: int | None = read
        self._relay = Background(lambda: _relay(channel, write, offer),
                                 f"relocation-in-{offer.domid}")

    def hand(self, domid: int) -> None:
        """Let the hypervisor load domain ``domid``'s state from the pipe (what it holds
        already, then the rest as it comes)."""
        read, self._read = self._read, None
        if read is None:
            raise RuntimeError("the stream was handed to the hypervisor already")
        try:
            self._driver.receive_state(domid, read)
        finally:
            os.close(read)

    def loaded(self, domid: int) -> None:
        """Wait until the whole stream has come and the hypervisor has loaded it."""
        self._relay.finish(threading.TIMEOUT_MAX)  # its own waits are each bounded
        self._driver.wait_received(domid, IDLE_TIMEOUT)

    def hand_and_load(self, domid: int) -> None:
        """``hand``, then ``loaded``: for a domain whose devices were plugged in first."""
        self.hand(domid)
        self.loaded(domid)

    def stop(self) -> None:
        """The copying ended (after a failure: a pipe nobody reads any more breaks it, as
        the hypervisor's does when the domain is destroyed, else the source's silence for
        ``IDLE_TIMEOUT``) before the connection is used again; what the pipe held is
        freed with it."""
        read, self._read = self._read, None
        if read is not None:
            os.close(read)
        with contextlib.suppress(BaseException):  # what it raised was seen, or is moot
            self._relay.finish(2 * IDLE_TIMEOUT)


@contextlib.contextmanager
def _inflow(channel: xfr.Channel, address: str, offer: xfr.Xfr,
            driver: StreamDriver) -> Iterator[Inflow]:
    inflow = Inflow(channel, address, offer, driver)
    try:
        yield inflow
    finally:
        inflow.stop()


def _relay(channel: xfr.Channel, write: int, offer: xfr.Xfr) -> None:
    """Copy the stream from ``channel`` into the pipe ``write``, then close it."""
    try:
        _receive_data(channel, write, MAX_ROUNDS * max(offer.memory_bytes, 1 << 30))
    finally:
        os.close(write)


def _receive_data(channel: xfr.Channel, write: int, budget: int) -> None:
    """Copy ``(xfr.data SIZE)`` pieces into the pipe until ``(xfr.data 0)``."""
    while True:
        message = channel.receive()
        if isinstance(message, xfr.Data) and message.size == 0:
            return
        if isinstance(message, xfr.Data):
            budget -= message.size
            if budget < 0:
                raise xfr.XfrError("the stream is beyond its transfer budget", xfr.Code.EPROTO)
            channel.receive_into(write, message.size)
        else:
            raise _unexpected(message)


def _check_offer(offer: xfr.Xfr, incoming: Incoming) -> DomainConfig:
    """The offered domain's config once every check passed; its name is then held in
    ``incoming.moving`` (the caller releases it), so no restore or other migration in
    makes a domain of that name meanwhile."""
    vm = sxp.child_value(offer.info, "config")
    if vm is None:
        raise xfr.XfrError("the domain info holds no (config (vm ...))", xfr.Code.EINVAL)
    try:
        config = check_new_domain(parse_domain_config(vm))
    except XendError as error:
        raise xfr.XfrError(f"bad domain config: {error.message}", xfr.Code.EINVAL) from None
    kind = incoming.driver.kind
    if offer.kind != kind:
        raise xfr.XfrError(f"this xend runs the {kind} hypervisor driver; a domain of the "
                           f"{offer.kind} driver cannot migrate here", xfr.Code.EINVAL)
    if offer.memory_bytes % xfr.PAGE_SIZE:
        raise xfr.XfrError("the memory size is not whole pages", xfr.Code.EINVAL)
    try:
        incoming.moving.take(config.name, "migrated in")
    except Conflict as error:
        raise xfr.XfrError(error.message, xfr.Code.EEXIST) from None
    try:
        if config.name in ask(incoming.table.names()):
            raise xfr.XfrError(f"vm name clash: {config.name}", xfr.Code.EEXIST)
        needed = max(config.memory_mb, -(-offer.memory_bytes // (1 << 20)))
        free = incoming.driver.physinfo().free_memory_mb
        if needed > free:
            raise xfr.XfrError(f"not enough memory for {config.name}: it needs {needed} MiB, "
                               f"{free} MiB are free", xfr.Code.ENOMEM)
    except BaseException:
        incoming.moving.release(config.name)
        raise
    return config


def _receive_memory(channel: xfr.Channel, offer: xfr.Xfr) -> bytes:
    """Read pages until the final state; the state once the digest matches."""
    pages = offer.memory_bytes // xfr.PAGE_SIZE
    budget = MAX_ROUNDS * offer.memory_bytes
    digest = hashlib.sha256()
    while True:
        message = channel.receive()
        if isinstance(message, xfr.Pages):
            size = message.count * xfr.PAGE_SIZE
            if message.first + message.count > pages or size > budget:
                raise xfr.XfrError(f"pages {message.first}+{message.count} are beyond the "
                                   f"domain's {pages} or its transfer budget", xfr.Code.EPROTO)
            budget -= size
            digest.update(channel.receive_bytes(size))
        elif isinstance(message, xfr.State):
            state = channel.receive_bytes(message.size)
            if message.digest != digest.hexdigest():
                raise xfr.XfrError("the memory did not arrive whole: its digest differs",
                                   xfr.Code.EPROTO)
            return state
        else:
            raise _unexpected(message)


def _unexpected(message: xfr.Message) -> xfr.XfrError:
    """The error a message means where another was due mid-transfer."""
    if isinstance(message, xfr.Err):
        return xfr.XfrError(f"the source gave up: {message.reason or message.code}",
                            message.code)
    return xfr.XfrError(f"unexpected {type(message).__name__} mid-transfer", xfr.Code.EPROTO)


def _refuse(sock: socket.socket, error: xfr.Err | None) -> None:
    with contextlib.suppress(OSError), sock:
        if error is not None:
            sock.settimeout(1.0)
            sock.sendall(xfr.encode(error))
