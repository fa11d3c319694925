"""A migration out: the source's side of the xfr conversation (``xfr/``) with another
xend's relocation port, which ``relocation.py`` serves.

The migration is a session from its begin to its ok or error (``xend.domain.migrate``
events, ``migrate/N`` in the store); progress goes out as
``xend.domain.migrate.progress`` events. A domain whose state is bytes and pages
(``PagedDriver``, the sim) goes with ``_send_paged``: its memory streamed by
``pages.Sender`` (pre-copy rounds when live), then it is suspended and the rest and its
state follow. A stream driver's domain (``StreamDriver``, qemu) goes with
``_send_stream``: the hypervisor's stream starts into a pipe as the offer goes, and is
relayed over the connection once the destination took the offer (it makes the machine
from the offer's meta meanwhile). Either way the source
is destroyed only once the destination has built and configured the new domain and
said ``(xfr.xfr.ok NEWID)``; any failure before that leaves the source running
(``rollback``) and the destination destroys what it built. A stream driver's source
answers as soon as that word came and the session is recorded as committing with the
new id: the domain leaves the table's listing at once (``DomainTable.handed_over``) and
its teardown (qemu's exit, its devices, records and files) goes on after the reply on a
thread of its own (``_tear_down``); the record stays until it is done, so a xend killed
meanwhile finishes it when it starts again, and its name stays ``leaving`` in
``Moving`` so a migration straight back waits those milliseconds.

The connection is the Context's ``Dialer``'s (``xfr/tls.py``): mutual TLS, the
destination's certificate checked against the CA and the host dialed; plain TCP with
``(xend-relocation-tls no)``; refused, saying why, when TLS is on but not configured.
A connection or handshake that fails comes before anything is done to the domain.
A peer that refuses the connection, breaks it off or answers nonsense is a 502
(``BadGateway``), not a failure of this host's hypervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace

from xend_actors import tally
from xend_actors.actors import ASK_TIMEOUT, ask, is_bug
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.record import DomainInfo
from xend_actors.errors import BadGateway, XendError
from xend_actors.hypervisor.base import StreamProgress, StreamResult, StreamState
from xend_actors.transfer import rollback, xfr
from xend_actors.transfer.background import Background
from xend_actors.transfer.bringup import CONFIGURE_TIMEOUT
from xend_actors.transfer.context import STREAM_TIMEOUT, Context, failed
from xend_actors.transfer.drivers import MovableDriver, PagedDriver, StreamDriver
from xend_actors.transfer.pages import Sender
from xend_actors.transfer.progress import Phase, Progress
from xend_actors.transfer.records import Destination, MigrateRecord, SessionState, Source

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
BUILD_TIMEOUT = CONFIGURE_TIMEOUT + ASK_TIMEOUT  # the destination builds the domain
EVENT = "xend.domain.migrate"


def run(context: Context, driver: MovableDriver, domain: DomainProxy, info: DomainInfo,
        where: tuple[str, int], live: bool, resource: int) -> str:
    """Migrate domain ``info`` (its Domain actor ``domain``) to the relocation port at
    ``where``, at most ``resource`` Mbit/s (0: no limit); the new domain's URL."""
    host, port = where
    # A stream driver's session says whether the guest was paused, so a xend that starts
    # again after it died mid-migration knows whether to let the guest run (a sim
    # guest's suspend says it by itself).
    paused = info.paused if isinstance(driver, StreamState) else None
    record = MigrateRecord(context.session_id(), SessionState.BEGIN, live,
                           Source(socket.gethostname(), info.domid), Destination(host),
                           resource, paused)

    def tell(version: MigrateRecord) -> None:
        context.announce(EVENT, info.name, info.domid, version)

    def report(progress: Progress) -> None:
        context.events.publish(f"{EVENT}.progress",
                               [info.name, str(info.domid), progress.sxpr()])

    def committing(newid: int | None) -> None:
        """Recorded as committing (handed over once the new id is known); told once
        it is."""
        version = replace(record, state=SessionState.COMMIT, dst=Destination(host, newid))
        if newid is None:
            context.keep(version)
        else:
            tell(version)

    tell(record)
    log.info("Migrating domain %s (id %s) to %s:%s, live %s, %s Mbit/s", info.name,
             info.domid, host, port, live, resource or "unlimited")
    started = time.monotonic()
    try:
        with contextlib.closing(_connect(context, host, port)) as channel:
            if isinstance(driver, StreamState):
                newid, downtime = _send_stream(context, driver, info, channel, live,
                                               resource, report, committing)
            else:
                newid, downtime = _send_paged(context, driver, domain, info, channel,
                                              live, resource, report)
    except Exception as error:
        log.error("Migrating domain %s to %s:%s failed: %s", info.name, host, port, error)
        # a bug leaves the record: the Transfer actor puts back what it says
        context.conclude(EVENT, info.name, info.domid,
                         replace(record, state=SessionState.ERROR), keep=is_bug(error))
        if is_bug(error):
            raise
        raise failed("migrate", _as_peer_failure(error),
                     lambda: rollback.left(driver, info.domid)) from None
    duration = time.monotonic() - started
    tally.DOWNTIME.observe((), downtime)
    done = replace(record, state=SessionState.OK, dst=Destination(host, newid, downtime, duration))
    if isinstance(driver, StreamState):
        # It runs there: gone from here at once, and torn down after the reply; its
        # record (committing, with the new id) stays until then, for a xend that dies
        # meanwhile to finish the teardown when it starts again.
        with contextlib.suppress(XendError):  # else its destroy drops it, a moment later
            ask(context.table.handed_over(info.domid), "the domain table", context.inner())
        context.moving.leaving(info.name)
        context.conclude(EVENT, info.name, info.domid, done, keep=True)
        Background(lambda: _tear_down(context, driver, domain, info, done),
                   f"migrated-{info.domid}")
    else:
        context.conclude(EVENT, info.name, info.domid, done)
    log.info("Migrated domain %s to %s:%s as domain %s in %.3f s; it was stopped "
             "for %.3f s", info.name, host, port, newid, duration, downtime)
    return f"http://{host}:{port}/xend/domain/{newid}"


def _tear_down(context: Context, driver: MovableDriver, domain: DomainProxy,
               info: DomainInfo, record: MigrateRecord) -> None:
    """Destroy what is left here of domain ``info``, which runs elsewhere now, then drop
    the migration's ``record`` (kept if that failed: the next start finishes it) and let
    its name go."""
    try:
        if rollback.handed_over(driver, context.table, domain, info.domid):
            context.drop(record)
    except Exception:
        log.exception("Tearing down domain %s (id %s) after its migration failed; the next "
                      "start of xend finishes it", info.name, info.domid)
    finally:
        context.moving.left(info.name)


def _send_paged(context: Context, driver: PagedDriver, domain: DomainProxy,
                info: DomainInfo, channel: xfr.Channel, live: bool, mbit: int,
                report: Callable[[Progress], None]) -> tuple[int, float]:
    """Migrate a domain whose state is pages: (its new id, how long it was stopped) once
    it runs at the other end of ``channel``."""
    domid = info.domid
    stop = rollback.Suspension(driver, domain, domid, info.paused)
    destroyed = False
    try:
        channel.send(xfr.Hello())
        channel.expect_ok("the connection")
        sender = Sender(channel, driver, domid, mbit, report)
        channel.send(xfr.Xfr(domid, info.sxpr(), sender.memory_bytes, live))
        channel.expect_ok(f"domain {info.name}")
        try:
            pages = sender.precopy() if live else range(sender.pages)
            stopped = time.monotonic()
            stop.suspend(context.inner(rollback.SUSPEND_TIMEOUT))
            if not live:
                driver.dirty_pages(domid)  # all pages go: the log starts afresh
            sender.stopcopy(pages)
        except xfr.XfrError as error:
            raise _peer_reason(channel, error) from None
        channel.sock.settimeout(context.seconds(BUILD_TIMEOUT))
        reply = _built(channel, channel.receive(), "could not build the domain")
        # From here there is no way back: the destination runs it on our commit.
        rollback.destroy(context.table, domid)
        destroyed = True
        channel.send(xfr.OK)
        channel.expect_ok("the commit")
        return reply.newid, time.monotonic() - stopped
    except BaseException as error:
        if destroyed:
            raise BadGateway(f"domain {domid} was handed over but {channel.peer} did not "
                             f"confirm it runs: {error}") from None
        stop.undo()
        raise


def _send_stream(context: Context, driver: StreamDriver, info: DomainInfo,
                 channel: xfr.Channel, live: bool, mbit: int,
                 report: Callable[[Progress], None],
                 committing: Callable[[int | None], None]) -> tuple[int, float]:
    """Migrate a stream driver's domain: the destination makes the machine while the
    state flows over the connection; (its new id, how long it was stopped) once it runs.

    The destination runs the guest as soon as all of its state is in and loaded, then
    says ``(xfr.xfr.ok NEWID)``; the source, stopped since the last of its state went,
    is recorded as handed over on that word (``run`` tears it down after its reply), so
    the guest is stopped only while its state moves, not for a handshake. Before the
    end of the stream nothing can run at the destination: any failure runs the source
    again. The end (``(xfr.data 0)``) goes once the session is recorded as committing
    (with no new id: ``committing(None)``); from then on the destination may run the
    guest, so the source runs again only if the destination says it failed
    (``(xfr.err ...)``: it destroyed what it made, unrun). Without a word
    either way (the connection lost, the peer silent) the source stays stopped, neither
    run nor destroyed, for its owner to decide: never running at both ends, never lost.
    """
    domid = info.domid
    ended = refused = False
    started = time.monotonic()
    try:
        channel.send(xfr.Hello())
        channel.expect_ok("the connection")
        channel.send(xfr.Xfr(domid, info.sxpr(), _memory_mb(info) << 20, live, driver.kind,
                             driver.describe(domid)))

        def progress(step: StreamProgress) -> None:
            report(Progress.since(started, Phase.STOPCOPY if step.stopped else Phase.PRECOPY,
                                  step.sent, step.total))

        def answered_then_sent(read: int) -> None:
            """The state goes once the destination took the offer (it says so before its
            hypervisor is up: ``relocation.Inflow``); meanwhile the hypervisor fills the
            pipe. A refusal closes the pipe, which ends the hypervisor's stream."""
            channel.sock.settimeout(context.seconds(BUILD_TIMEOUT))
            channel.expect_ok(f"domain {info.name}")
            channel.sock.settimeout(context.seconds(STREAM_TIMEOUT))
            channel.send_pipe(read)

        read, write = xfr.open_pipe(xend_writes=False)
        pump = Background(lambda: _drain(read, answered_then_sent), f"migrate-{domid}")
        try:
            result = _send_state(driver, domid, write, pump, live=live, mbit=mbit,
                                 progress=progress)
        except xfr.XfrError as error:
            raise _peer_reason(channel, error) from None
        committing(None)  # before the end goes: a xend that dies from here never runs it
        ended = True
        channel.send(xfr.Data(0))
        report(Progress.since(started, Phase.COMMIT, result.sent, result.sent))
        channel.sock.settimeout(context.seconds(BUILD_TIMEOUT))  # it loads and runs it
        answer = channel.receive()
        refused = isinstance(answer, xfr.Err)
        reply = _built(channel, answer, "could not load the domain")
    except BaseException as error:
        if ended and not refused:
            if is_bug(error):
                raise  # the Transfer actor puts back what the record says: the same
            raise BadGateway(f"domain {domid} stays paused here: {channel.peer} has all of "
                             f"its state but did not say whether it runs it ({error}); "
                             "unpause it here only if it does not run there") from None
        if not info.paused:  # also when qemu sent it all but the relay failed after
            with contextlib.suppress(XendError):
                driver.resume(domid)
        raise
    downtime = time.monotonic() - result.stopped_at
    committing(reply.newid)  # it runs there: a xend that dies from here destroys it
    with contextlib.suppress(XendError):
        channel.send(xfr.OK)
    with contextlib.suppress(XendError):  # the peer's last word: the guest runs there
        channel.expect_ok("the commit")
    return reply.newid, downtime


def _memory_mb(info: DomainInfo) -> int:
    """The memory a destination must have for the domain: its maximum."""
    if info.hv is not None:
        return info.hv.maxmem_kb // 1024
    return info.config.memory_mb if info.config is not None else 0


def _built(channel: xfr.Channel, reply: xfr.Message, failure: str) -> xfr.XfrOk:
    """The destination's answer to the state, ``reply``: ``(xfr.xfr.ok NEWID)``, else
    XfrError."""
    if isinstance(reply, xfr.Err):
        raise xfr.XfrError(f"{channel.peer} {failure}: {reply.reason or reply.code}",
                           reply.code)
    if not isinstance(reply, xfr.XfrOk):
        raise xfr.XfrError(f"{channel.peer} answered the state with "
                           f"{type(reply).__name__}", xfr.Code.EPROTO)
    return reply


def _drain(read: int, drain: Callable[[int], None]) -> None:
    """``drain`` a pipe's read end until its writers close it, then close it, so a writer
    whose reader failed is told at once (EPIPE)."""
    try:
        drain(read)
    finally:
        os.close(read)


def _send_state(driver: StreamDriver, domid: int, write: int, pump: Background, *,
                live: bool, mbit: int,
                progress: Callable[[StreamProgress], None]) -> StreamResult:
    """``send_state`` into ``write`` while ``pump`` drains the pipe; the pump's error (the
    connection failed) wins over what the hypervisor says of it."""
    try:
        result = driver.send_state(domid, write, live=live, mbit=mbit, progress=progress)
    except BaseException as error:
        os.close(write)
        with contextlib.suppress(BaseException):
            pump.finish(STREAM_TIMEOUT)
        raise (pump.error or error) from None
    os.close(write)
    pump.finish(STREAM_TIMEOUT)
    return result


def _as_peer_failure(error: Exception) -> Exception:
    """A broken conversation with the peer (an ``XfrError`` that names no status of its
    own: refused, closed, garbled) as the 502 it is."""
    if isinstance(error, xfr.XfrError) and error.status == 500:
        return BadGateway(error.message)
    return error


def _connect(context: Context, host: str, port: int) -> xfr.Channel:
    if context.dialer.refusal:  # this host's config, not the peer: no 502
        raise XendError(context.dialer.refusal)
    sock = context.dialer.connect(host, port, context.seconds(CONNECT_TIMEOUT))
    return xfr.Channel(sock, f"relocation peer {host}:{port}", STREAM_TIMEOUT)


def _peer_reason(channel: xfr.Channel, error: xfr.XfrError) -> xfr.XfrError:
    """The destination's own ``(xfr.err CODE 'why')`` if it sent one before it closed
    (a send fails before it is read), else ``error``."""
    channel.sock.settimeout(1.0)
    try:
        reply = channel.receive()
    except XendError:
        return error
    if isinstance(reply, xfr.Err) and reply.code:
        return xfr.XfrError(f"{channel.peer} gave up: {reply.reason or reply.code}", reply.code)
    return error
