"""The source's side of a migration: the xfr conversation (``xfr/``) with another
xend's relocation port, which ``relocation.py`` serves.

A domain whose state is bytes and pages (sim) goes with ``send``: its memory streamed
by ``migrate.Sender`` (pre-copy rounds when live), then it is suspended and the rest
and its state follow. A stream driver's domain (qemu) goes with ``send_stream``: the
destination makes the machine from the offer's meta, then the hypervisor's stream is
relayed from a pipe over the connection. Either way the source is destroyed only once
the destination has built and configured the new domain and said
``(xfr.xfr.ok NEWID)``; any failure before that leaves the source running (``rollback``)
and the destination destroys what it built. Sessions, events and progress are the
caller's (``Transfer``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable

import pykka

from xend_actors import sxp
from xend_actors.actors import ASK_TIMEOUT
from xend_actors.errors import XendError
from xend_actors.hypervisor.base import Driver, StreamProgress, StreamResult
from xend_actors.transfer import rollback, xfr
from xend_actors.transfer.background import Background
from xend_actors.transfer.pages import Phase, Progress, Sender

CONFIGURE_TIMEOUT = 120.0  # the destination attaches devices, which may run scripts
CONNECT_TIMEOUT = 10.0
STREAM_TIMEOUT = 30.0  # the most the destination may take to take the next bytes


def send(driver: Driver, table: pykka.ActorProxy, domain: pykka.ActorProxy, domid: int,
         info: sxp.Value, where: tuple[str, int], live: bool,
         make_sender: Callable[[xfr.Channel, int], Sender]) -> tuple[int, float]:
    """Migrate a domain whose state is pages: (its new id, how long it was stopped) once
    it runs at ``where``."""
    channel = _connect(*where)
    stop = rollback.Suspension(driver, domain, domid,
                               "p" in str(sxp.child_value(info, "state", "")))
    destroyed = False
    try:
        channel.send(xfr.Hello())
        channel.expect_ok("the connection")
        sender = make_sender(channel, domid)
        channel.send(xfr.Xfr(domid, info, sender.memory_bytes, live))
        channel.expect_ok(f"domain {sxp.child_value(info, 'name')}")
        try:
            pages = sender.precopy() if live else range(sender.pages)
            stopped = time.monotonic()
            stop.suspend()
            if not live:
                driver.dirty_pages(domid)  # type: ignore[attr-defined]  # all pages go
            sender.stopcopy(pages)
        except xfr.XfrError as error:
            raise _peer_reason(channel, error) from None
        channel.sock.settimeout(CONFIGURE_TIMEOUT + ASK_TIMEOUT)
        reply = _built(channel, "could not build the domain")
        # From here there is no way back: the destination runs it on our commit.
        rollback.destroy(table, domid)
        destroyed = True
        channel.send(xfr.OK)
        channel.expect_ok("the commit")
        return reply.newid, time.monotonic() - stopped
    except BaseException as error:
        if destroyed:
            raise XendError(f"domain {domid} was handed over but {channel.peer} did not "
                            f"confirm it runs: {error}") from None
        stop.undo()
        raise
    finally:
        channel.close()


def send_stream(driver: Driver, table: pykka.ActorProxy, domid: int, info: sxp.Value,
                where: tuple[str, int], live: bool, mbit: int,
                report: Callable[[Progress], None],
                committing: Callable[[int], None]) -> tuple[int, float]:
    """Migrate a stream driver's domain: the destination makes the machine, the state
    flows over the connection; (its new id, how long it was stopped) once it runs.

    Once the destination has all of the state, ``committing`` records the session as
    committing before the commit goes, and the source is destroyed once the destination
    runs the guest (or failed to say so): the stopped source can no longer run (a xend
    that starts again after dying here destroys it too), so it need not be gone first,
    and the guest is stopped for less."""
    channel = _connect(*where)
    was_paused = "p" in str(sxp.child_value(info, "state", ""))
    sent = committed = destroyed = False
    started = time.monotonic()
    try:
        channel.send(xfr.Hello())
        channel.expect_ok("the connection")
        memory_mb = int(sxp.child_value(info, "maxmem", "") or
                        sxp.child_value(info, "memory", "0") or 0)
        channel.send(xfr.Xfr(domid, info, memory_mb << 20, live, driver.kind,
                             driver.describe(domid)))  # type: ignore[attr-defined]
        channel.sock.settimeout(CONFIGURE_TIMEOUT + ASK_TIMEOUT)  # it makes the machine
        channel.expect_ok(f"domain {sxp.child_value(info, 'name')}")
        channel.sock.settimeout(STREAM_TIMEOUT)

        def progress(step: StreamProgress) -> None:
            rate = step.sent / max(time.monotonic() - started, 1e-6)
            report(Progress(Phase.STOPCOPY if step.stopped else Phase.PRECOPY, step.sent,
                            step.total, rate))

        read, write = xfr.open_pipe(xend_writes=False)
        pump = Background(lambda: _drain(read, channel.send_pipe), f"migrate-{domid}")
        try:
            result = _send_state(driver, domid, write, pump, live=live, mbit=mbit,
                                 progress=progress)
        except xfr.XfrError as error:
            raise _peer_reason(channel, error) from None
        sent = True
        channel.send(xfr.Data(0))
        report(Progress(Phase.COMMIT, result.sent, result.sent,
                        result.sent / max(time.monotonic() - started, 1e-6)))
        channel.sock.settimeout(CONFIGURE_TIMEOUT + ASK_TIMEOUT)
        reply = _built(channel, "could not load the domain")
        # From here there is no way back: the destination runs it on our commit.
        committing(reply.newid)
        committed = True
        channel.send(xfr.OK)
        channel.expect_ok("the commit")
        downtime = time.monotonic() - result.stopped_at
        rollback.destroy(table, domid)
        destroyed = True
        return reply.newid, downtime
    except BaseException as error:
        if committed:
            if not destroyed:
                rollback.discard(driver, table, domid)
            raise XendError(f"domain {domid} was handed over but {channel.peer} did not "
                            f"confirm it runs: {error}") from None
        if sent and not was_paused:
            with contextlib.suppress(XendError):
                driver.resume(domid)  # type: ignore[attr-defined]
        raise
    finally:
        channel.close()


def _built(channel: xfr.Channel, failed: str) -> xfr.XfrOk:
    """The destination's answer to the state: ``(xfr.xfr.ok NEWID)``, else XfrError."""
    reply = channel.receive()
    if isinstance(reply, xfr.Err):
        raise xfr.XfrError(f"{channel.peer} {failed}: {reply.reason or reply.code}",
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


def _send_state(driver: Driver, domid: int, write: int, pump: Background, *, live: bool,
                mbit: int, progress: Callable[[StreamProgress], None]) -> StreamResult:
    """``send_state`` into ``write`` while ``pump`` drains the pipe; the pump's error (the
    connection failed) wins over what the hypervisor says of it."""
    try:
        result = driver.send_state(domid, write, live=live, mbit=mbit,  # type: ignore[attr-defined]
                                   progress=progress)
    except BaseException as error:
        os.close(write)
        with contextlib.suppress(BaseException):
            pump.finish(STREAM_TIMEOUT)
        raise (pump.error or error) from None
    os.close(write)
    pump.finish(STREAM_TIMEOUT)
    return result


def _connect(host: str, port: int) -> xfr.Channel:
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as error:
        raise xfr.XfrError(f"cannot connect to the relocation port {where}: "
                           f"{error.strerror or error}") from None
    return xfr.Channel(sock, f"relocation peer {where}", STREAM_TIMEOUT)


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
