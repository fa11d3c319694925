"""A save (facts §10.3): a domain's image written to a file, then the domain destroyed.

The save is a session from its begin to its ok or error (``xend.domain.save`` events,
``migrate/N`` in the store). The domain is destroyed only once the image is complete
and fsynced; any failure before that lets the guest run on and leaves no file.

A sim domain (``PagedDriver``) is suspended the Xen way (``rollback.Suspension``) and
its state, a few KiB, written as a whole (``savefile.write``). A qemu domain
(``StreamDriver``) needs no suspend request: the hypervisor stops it and writes its
state straight into the file while a thread here checksums it and another sends it to
the disk (``savefile.Writer``), and ``resume`` runs it again on failure.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from xend_actors.actors import is_bug
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.record import DomainInfo
from xend_actors.errors import XendError
from xend_actors.hypervisor.base import StreamProgress, StreamState
from xend_actors.store import partial_path
from xend_actors.transfer import rollback, savefile
from xend_actors.transfer.background import Background
from xend_actors.transfer.context import STREAM_TIMEOUT, Context, failed
from xend_actors.transfer.drivers import MovableDriver, PagedDriver, StreamDriver
from xend_actors.transfer.progress import Phase, Progress
from xend_actors.transfer.records import SaveRecord, SessionState

log = logging.getLogger(__name__)

EVENT = "xend.domain.save"


def run(context: Context, driver: MovableDriver, domain: DomainProxy, info: DomainInfo,
        path: Path) -> None:
    """Save domain ``info`` (its Domain actor ``domain``) to ``path``, then destroy it."""
    # A stream driver's session says whether the guest was paused, so a xend that starts
    # again after it died mid-save knows whether to let the guest run (a sim guest's
    # suspend says it by itself).
    paused = info.paused if isinstance(driver, StreamState) else None
    # The image's temp file is named before it is made, so that a xend killed while it is
    # written removes it when it starts again.
    partial = partial_path(path)
    record = SaveRecord(context.session_id(), SessionState.BEGIN, info.domid, str(path),
                        paused, str(partial))
    started = time.monotonic()

    def report(step: StreamProgress) -> None:
        progress = Progress.since(started, Phase.SAVE, step.sent, step.total)
        context.events.publish(f"{EVENT}.progress",
                               [info.name, str(info.domid), progress.sxpr()])

    context.announce(EVENT, info.name, info.domid, record)
    log.info("Saving domain %s (id %s) to %s", info.name, info.domid, path)
    try:
        if isinstance(driver, StreamState):
            _save_stream(context, driver, info, path, partial, report)
        else:
            _save_paged(context, driver, domain, info, path, partial)
            size = path.stat().st_size
            report(StreamProgress(True, size, size))
    except Exception as error:
        log.error("Saving domain %s to %s failed: %s", info.name, path, error)
        # a bug leaves the record: the Transfer actor puts back what it says
        context.conclude(EVENT, info.name, info.domid,
                         replace(record, state=SessionState.ERROR), keep=is_bug(error))
        raise failed("save", error, lambda: rollback.left(driver, info.domid)) from None
    context.conclude(EVENT, info.name, info.domid, replace(record, state=SessionState.OK))
    log.info("Saved domain %s to %s", info.name, path)


def _save_paged(context: Context, driver: PagedDriver, domain: DomainProxy,
                info: DomainInfo, path: Path, partial: Path) -> None:
    stop = rollback.Suspension(driver, domain, info.domid, info.paused)
    written = False
    try:
        stop.suspend(context.inner(rollback.SUSPEND_TIMEOUT))
        state = driver.save_state(info.domid)
        savefile.write(path, savefile.SaveImage(info.sxpr(), state), partial)
        written = True
        rollback.destroy(context.table, info.domid)
    except BaseException:
        if written:
            path.unlink(missing_ok=True)
        stop.undo()
        raise


def _save_stream(context: Context, driver: StreamDriver, info: DomainInfo, path: Path,
                 partial: Path, report: Callable[[StreamProgress], None]) -> None:
    """The hypervisor writes the state straight into the file while one thread
    checksums it and another sends it to the disk as it lands; the domain is destroyed
    once the file is complete and fsynced."""
    domid = info.domid
    writer = savefile.Writer(path, info.sxpr(), driver.kind, driver.describe(domid), partial)
    sent = committed = False
    done = threading.Event()
    follower = Background(lambda: writer.follow(done, STREAM_TIMEOUT), "save-check")
    syncing = Background(lambda: writer.sync_until(done), "save-sync")
    try:
        try:
            driver.send_state(domid, writer.fileno(), live=False, mbit=0, progress=report)
        finally:
            done.set()
            try:
                follower.finish(context.seconds(STREAM_TIMEOUT))
            finally:
                syncing.finish(context.seconds(STREAM_TIMEOUT))
        sent = True
        writer.commit()
        committed = True
        rollback.destroy(context.table, domid)
    except BaseException:
        if committed:
            path.unlink(missing_ok=True)
        else:
            writer.abort()
        if sent and not info.paused:
            with contextlib.suppress(XendError):
                driver.resume(domid)
        raise
