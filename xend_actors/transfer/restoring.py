"""A restore: a saved domain brought back from its file, running, its info the answer.

The file is checked before anything is made (header, driver, info, and a sim image's
checksum); the name is held (``Moving``), and the table's intent (``intended``) refuses
it if it is taken. The driver makes the domain paused and ``bringup`` adopts,
configures and unpauses it. The restore is recorded as ``migrate/N`` in the store from
when the domain is made (before that the intent is what a restarted xend puts back)
until it runs; what fails is ``restore failed: why``.

A sim image (``PagedDriver``) is read whole and its state handed to the driver. A
qemu image (``StreamDriver``) is too big to hold: the machine its meta describes is
made and configured first (a domain without devices is configured while its state
loads: nothing needs plugging in before it), then the hypervisor loads the state
straight from the file while a thread checksums it beside, and the guest runs only if the
checksum matches. The time to beat is a bare qemu's, launched and loading the file: so
the qemu is launched as soon as the intent is recorded, and xend's own work (the
checksum, the session's record, adopting the domain and its console) goes on while
qemu starts and loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from xend_actors import sxp
from xend_actors.domain.config import DomainConfig, check_new_domain, parse_domain_config
from xend_actors.domain.record import DomainInfo
from xend_actors.errors import BadRequest, XendError
from xend_actors.hypervisor.base import StreamState
from xend_actors.transfer import rollback, savefile
from xend_actors.transfer.background import Background
from xend_actors.transfer.bringup import bring_up, intended, running
from xend_actors.transfer.context import STREAM_TIMEOUT, Context, failed
from xend_actors.transfer.drivers import MovableDriver, PagedDriver, StreamDriver
from xend_actors.transfer.progress import Phase, Progress
from xend_actors.transfer.records import RestoreRecord

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.1
EVENT = "xend.domain.restore.progress"


def run(context: Context, driver: MovableDriver, path: Path) -> DomainInfo:
    """Restore the domain saved in ``path``; its info once it runs again."""
    if isinstance(driver, StreamState):
        return _restore_stream(context, driver, path)
    image = savefile.read(path, driver.kind)
    with _restorable(context, path, image.info) as config:  # all checks before anything is made
        return _restore_paged(context, driver, path, image, config)


def _restore_paged(context: Context, driver: PagedDriver, path: Path,
                   image: savefile.SaveImage, config: DomainConfig) -> DomainInfo:
    with (_restoring(context, path, config) as record,
          intended(context.table, config, context.inner())):
        began = time.monotonic()
        domid = driver.restore_state(config.name, config.memory_mb, image.payload)
        _made(context, driver, record, domid)
        size = len(image.payload)
        _progress(context, config.name, domid, Progress.since(began, Phase.RESTORE, size, size))
        bring_up(driver, context.table, domid, config, context.inner)
        info = running(context.table, domid, context.inner())
    log.info("Restored domain %s (id %s) from %s", config.name, domid, path)
    return info


def _restore_stream(context: Context, driver: StreamDriver, path: Path) -> DomainInfo:
    """The machine is made and configured, then its state flows in from the file,
    checksummed as it goes; it runs once all is in."""
    reader = savefile.Reader(path, driver.kind)  # header, driver and info checked
    try:
        with _restorable(context, path, reader.header.info) as config:
            return _restore_from(context, driver, reader, config)
    finally:
        reader.close()


def _restore_from(context: Context, driver: StreamDriver, reader: savefile.Reader,
                  config: DomainConfig) -> DomainInfo:
    path = reader.path
    with (_restoring(context, path, config) as record,
          intended(context.table, config, context.inner())):
        # The driver returns as qemu starts: what follows until the state is asked for
        # (the record, the checksum's start) overlaps qemu's start-up.
        domid = driver.prepare_incoming(config.name, reader.header.meta)
        _made(context, driver, record, domid)
        with _checking(reader) as checking:
            _load(context, driver, reader, checking, config, domid)
        info = running(context.table, domid, context.inner())
    log.info("Restored domain %s (id %s) from %s", config.name, domid, path)
    return info


def _load(context: Context, driver: StreamDriver, reader: savefile.Reader,
          checking: Background, config: DomainConfig, domid: int) -> None:
    """Domain ``domid`` brought up with its state from ``reader``, which ``checking``
    checksums beside."""
    # The hypervisor loads the state straight from the file; a bad checksum wins over
    # what it makes of bad bytes. With no device to plug in first, the state comes
    # in while the domain is adopted and its console made.
    fd, loaded = reader.fileno(), threading.Event()  # fileno() seeks: once
    early = not config.devices
    watcher = Background(lambda: _watch(context, config.name, domid, fd, reader.header,
                                        loaded), "restore-progress")
    try:
        if early:
            with rollback.discarded_on_failure(driver, context.table, domid):
                driver.receive_state(domid, fd)

        def load() -> None:
            try:
                if not early:
                    driver.receive_state(domid, fd)
                checking.finish(context.seconds(STREAM_TIMEOUT))
                driver.wait_received(domid, context.seconds(STREAM_TIMEOUT))
            finally:
                loaded.set()

        try:
            bring_up(driver, context.table, domid, config, context.inner, load)
        except XendError:
            if early:  # qemu may have choked on bad bytes before load() looked
                checking.finish(context.seconds(STREAM_TIMEOUT))
            raise
    finally:
        loaded.set()
        watcher.finish(STREAM_TIMEOUT)


@contextlib.contextmanager
def _checking(reader: savefile.Reader) -> Iterator[Background]:
    """The payload checksummed on a thread beside what runs inside (``finish`` checks
    it), done with the file before it closes."""
    checking = Background(reader.finish, "restore-check")
    try:
        yield checking
    finally:
        with contextlib.suppress(BaseException):
            checking.finish(STREAM_TIMEOUT)  # after the restore: its own wait


def _made(context: Context, driver: MovableDriver, record: RestoreRecord, domid: int) -> None:
    """Domain ``domid`` made: recorded, so that a restarted xend destroys it unless it
    runs (until now the table's intent did)."""
    with rollback.discarded_on_failure(driver, context.table, domid):
        context.keep(replace(record, domid=domid))


@contextlib.contextmanager
def _restorable(context: Context, path: Path, info: sxp.Value) -> Iterator[DomainConfig]:
    """The saved domain's config, its name held for this restore (whether it is free
    the table's intent says: ``intended``)."""
    vm = sxp.child_value(info, "config")
    if vm is None:
        raise BadRequest(f"{path} holds no (config (vm ...)) for the domain")
    config = check_new_domain(parse_domain_config(vm))
    with context.holding(config.name, "restored"):
        yield config


@contextlib.contextmanager
def _restoring(context: Context, path: Path, config: DomainConfig) -> Iterator[RestoreRecord]:
    """The restore's session, dropped from the store once it ends (``_made`` keeps it
    there); what fails is 'restore failed'."""
    record = RestoreRecord(context.session_id(), str(path))
    log.info("Restoring domain %s from %s", config.name, path)
    with context.dropped_after(record):
        try:
            yield record
        except Exception as error:
            log.error("Restoring from %s failed: %s", path, error)
            raise failed("restore", error, lambda: "nothing was restored") from None


def _watch(context: Context, name: str, domid: int, fd: int, header: savefile.Header,
           loaded: threading.Event) -> None:
    """Progress events while the hypervisor reads the state from ``fd``: it shares the
    file's offset with xend (the descriptor was passed, not reopened)."""
    total, began, last = header.payload_size, time.monotonic(), -1
    while True:
        done = loaded.wait(PROGRESS_SECONDS)
        try:
            read = os.lseek(fd, 0, os.SEEK_CUR) - header.payload_offset
        except OSError:
            return
        read = min(max(read, 0), total)
        if read != last:
            last = read
            _progress(context, name, domid, Progress.since(began, Phase.RESTORE, read, total))
        if done:
            return


def _progress(context: Context, name: str, domid: int, progress: Progress) -> None:
    context.events.publish(EVENT, [name, str(domid), progress.sxpr()])
