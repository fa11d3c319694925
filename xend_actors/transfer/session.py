"""A TransferSession actor runs one save, restore or migration out, then stops.

The Transfer actor (``transfer.py``) starts one for each transfer asked of it, so
transfers of different domains run side by side: a save need not wait for a slow
migration of another domain. What the sessions share is a ``Context``: the driver, the
DomainTable and event bus proxies, the store's ``migrate/`` folder where each session is
recorded while it runs (facts §4.5, §7.5), the session numbers, and ``Moving``
(``moving.py``), which refuses a second transfer of a domain while one runs.

Save (facts §10.3): suspend the domain (``rollback.Suspension``), write the image
(``savefile``), and destroy the domain only once the image is complete and fsynced.
Any failure before that resumes the guest, so the domain keeps running, and leaves
no file.

Restore: the image is checked whole before anything is created; the driver builds a
paused domain from the saved state; ``bringup`` has the DomainTable adopt it and its
Domain actor configure it as for any adopted domain (devices, console), then unpauses it.

Migrate: the conversation with the destination is ``outgoing.py``'s; progress goes out
as ``xend.domain.migrate.progress`` events
(``(NAME ID (progress (phase P) (sent B) (total B) (rate B/s)))``).

A driver whose state is a stream (qemu; ``Driver.send_state`` in ``hypervisor/base.py``)
takes other paths: a save has the hypervisor write its state straight into the save
file while a thread here hashes it; a restore makes and configures the machine the
file's meta describes, then has the hypervisor load the state from the file while it
is hashed, and lets it run only if the checksum matches. The stream needs no suspend
request: the hypervisor stops the guest, and ``resume`` runs it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import sxp
from xend_actors.actors import ask
from xend_actors.domain.config import DomainConfig, parse_domain_config
from xend_actors.errors import BadRequest, Conflict, XendError
from xend_actors.hypervisor.base import Driver, StreamProgress
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor
from xend_actors.transfer import outgoing, records, rollback, savefile, xfr
from xend_actors.transfer.background import Background
from xend_actors.transfer.bringup import bring_up
from xend_actors.transfer.moving import Moving
from xend_actors.transfer.pages import Phase, Progress, Sender
from xend_actors.transfer.records import (
    Destination,
    MigrateRecord,
    RestoreRecord,
    SaveRecord,
    SessionRecord,
    SessionState,
    Source,
)

log = logging.getLogger(__name__)

RESTORE_PROGRESS_SECONDS = 0.1
STREAM_TIMEOUT = 30.0  # the most the hypervisor may take to move the next bytes


@dataclass(frozen=True)
class Context:
    """What every transfer session shares."""

    driver: Driver
    table: pykka.ActorProxy
    events: pykka.ActorProxy
    sessions: RecordDir
    ids: Iterator[int]
    moving: Moving = field(default_factory=Moving)


def first_session_id(sessions: RecordDir) -> int:
    """The number after the highest session recorded in ``sessions``."""
    keys = sessions.keys()  # a RecordDir's, not a dict's
    return 1 + max((int(k) for k in keys if k.isdigit()), default=0)


class TransferSession(TracedActor):
    """One save, restore or migration out; whoever started it stops it afterwards."""

    # A transfer a stopping xend leaves half done is put right by the next start
    # (``Transfer._recover``); it must not hold the process up.
    use_daemon_thread = True

    def __init__(self, context: Context) -> None:
        super().__init__()
        self._context = context
        self._driver = context.driver
        self._table = context.table
        self._events = context.events
        self._sessions = context.sessions

    # --- save --------------------------------------------------------------------------

    def save(self, dom: str, file: str) -> None:
        """Save domain ``dom`` to ``file`` (an absolute path on this host), then destroy it."""
        if self._streams:
            self._require("describe", "send_state", "resume")
        else:
            self._require("save_state", "resume")
        path = Path(file)
        savefile.check_target(path)
        domain, info, name, domid = self._leaving(dom, "save")
        with self._context.moving.held(name, "saved"):
            self._run_save(domain, name, domid, info, path)

    def _run_save(self, domain: pykka.ActorProxy, name: str, domid: int, info: sxp.Value,
                  path: Path) -> None:
        """The save, recorded as a session from its begin to its ok or error."""
        ids = [name, str(domid)]

        def record(state: SessionState) -> None:
            self._announce("xend.domain.save", ids, replace(session, state=state))

        started = time.monotonic()

        def report(step: StreamProgress) -> None:
            rate = step.sent / max(time.monotonic() - started, 1e-6)
            progress = Progress(Phase.SAVE, step.sent, step.total, rate)
            self._events.publish("xend.domain.save.progress", [*ids, progress.sxpr()])

        was_paused = "p" in str(sxp.child_value(info, "state", ""))
        session = SaveRecord(self._session_id(), SessionState.BEGIN, domid, str(path),
                             self._paused_field(was_paused))
        record(SessionState.BEGIN)
        log.info("Saving domain %s (id %s) to %s", name, domid, path)
        try:
            if self._streams:
                self._save_stream(domid, info, path, was_paused, report)
            else:
                self._save(domain, domid, info, path, was_paused)
                size = path.stat().st_size
                report(StreamProgress(True, size, size))
        except Exception as error:
            log.error("Saving domain %s to %s failed: %s", name, path, error)
            record(SessionState.ERROR)
            raise _failed("save", error) from None
        else:
            record(SessionState.OK)
            log.info("Saved domain %s to %s", name, path)
        finally:
            self._sessions.delete(session.id)

    def _save(self, domain: pykka.ActorProxy, domid: int, info: sxp.Value, path: Path,
              was_paused: bool) -> None:
        stop = rollback.Suspension(self._driver, domain, domid, was_paused)
        written = False
        try:
            stop.suspend()
            state = self._driver.save_state(domid)  # type: ignore[attr-defined]
            savefile.write(path, savefile.SaveImage(info, state))
            written = True
            rollback.destroy(self._table, domid)
        except BaseException:
            if written:
                path.unlink(missing_ok=True)
            stop.undo()
            raise

    def _save_stream(self, domid: int, info: sxp.Value, path: Path, was_paused: bool,
                     report: Callable[[StreamProgress], None]) -> None:
        """Save a stream driver's domain: the hypervisor writes its state straight into
        the file while a thread hashes it; the domain is destroyed once the file is
        complete and fsynced."""
        writer = savefile.Writer(path, info, self._driver.kind, self._driver.describe(domid))
        sent = committed = False
        done = threading.Event()
        follower = Background(lambda: writer.follow(done, STREAM_TIMEOUT), "save-hash")
        try:
            try:
                self._driver.send_state(domid, writer.fileno(), live=False, mbit=0,
                                        progress=report)
            finally:
                done.set()
                follower.finish(STREAM_TIMEOUT)
            sent = True
            writer.commit()
            committed = True
            rollback.destroy(self._table, domid)
        except BaseException:
            if committed:
                path.unlink(missing_ok=True)
            else:
                writer.abort()
            if sent and not was_paused:
                with contextlib.suppress(XendError):
                    self._driver.resume(domid)  # type: ignore[attr-defined]
            raise

    # --- restore -------------------------------------------------------------------------

    def restore(self, file: str) -> sxp.Value:
        """Restore the domain saved in ``file``; its info once it runs again."""
        if self._streams:
            self._require("prepare_incoming", "receive_state", "wait_received")
            return self._restore_stream(Path(file))
        self._require("restore_state")
        path = Path(file)
        image = savefile.read(path, getattr(self._driver, "kind", None))
        with self._restorable(path, image.info) as config:  # all checks before anything is made
            return self._restore_image(path, image, config)

    def _restore_image(self, path: Path, image: savefile.SaveImage,
                       config: DomainConfig) -> sxp.Value:
        with self._restoring(path, config):
            began = time.monotonic()
            domid = self._driver.restore_state(  # type: ignore[attr-defined]
                config.name, config.memory_mb, image.payload)
            size = len(image.payload)
            self._restore_progress(config.name, domid, size, size, began)
            info = bring_up(self._driver, self._table, domid, config)
        log.info("Restored domain %s (id %s) from %s", config.name, domid, path)
        return info

    def _restore_stream(self, path: Path) -> sxp.Value:
        """Restore a stream driver's domain: the machine is made and configured, then its
        state flows in from the file, checksummed as it goes; it runs once all is in."""
        reader = savefile.Reader(path, self._driver.kind)  # header, driver and info checked
        # The checksum is computed beside the launch and the load, and checked before
        # the guest runs.
        checking = Background(reader.finish, "restore-hash")
        try:
            with self._restorable(path, reader.header.info) as config:
                return self._restore_from(reader, checking, config)
        finally:
            with contextlib.suppress(BaseException):  # done with the file before it closes
                checking.finish(STREAM_TIMEOUT)
            reader.close()

    def _restore_from(self, reader: savefile.Reader, checking: Background,
                      config: DomainConfig) -> sxp.Value:
        path = reader.path
        with self._restoring(path, config) as session:
            domid = self._driver.prepare_incoming(config.name, reader.header.meta)
            with rollback.discarded_on_failure(self._driver, self._table, domid):
                self._keep(replace(session, domid=domid))

            def load() -> None:
                # The hypervisor loads the state straight from the file; a bad
                # checksum wins over what it makes of bad bytes.
                fd, loaded = reader.fileno(), threading.Event()  # fileno() seeks: once
                watcher = Background(lambda: self._watch_restore(
                    config.name, domid, fd, reader.header, loaded), "restore-progress")
                try:
                    self._driver.receive_state(domid, fd)
                    checking.finish(STREAM_TIMEOUT)
                    self._driver.wait_received(domid, STREAM_TIMEOUT)
                finally:
                    loaded.set()
                    watcher.finish(STREAM_TIMEOUT)

            info = bring_up(self._driver, self._table, domid, config, load)
        log.info("Restored domain %s (id %s) from %s", config.name, domid, path)
        return info

    @contextlib.contextmanager
    def _restoring(self, path: Path, config: DomainConfig) -> Iterator[RestoreRecord]:
        """The restore's session, recorded while it runs; what fails is 'restore failed'."""
        session = RestoreRecord(self._session_id(), str(path))
        self._keep(session)
        log.info("Restoring domain %s from %s", config.name, path)
        try:
            yield session
        except Exception as error:
            log.error("Restoring from %s failed: %s", path, error)
            raise _failed("restore", error) from None
        finally:
            self._sessions.delete(session.id)

    def _watch_restore(self, name: str, domid: int, fd: int, header: savefile.Header,
                       loaded: threading.Event) -> None:
        """Progress events while the hypervisor reads the state from ``fd``: it shares the
        file's offset with xend (the descriptor was passed, not reopened)."""
        total, began, last = header.payload_size, time.monotonic(), -1
        while True:
            done = loaded.wait(RESTORE_PROGRESS_SECONDS)
            try:
                read = os.lseek(fd, 0, os.SEEK_CUR) - header.payload_offset
            except OSError:
                return
            read = min(max(read, 0), total)
            if read != last:
                last = read
                self._restore_progress(name, domid, read, total, began)
            if done:
                return

    def _restore_progress(self, name: str, domid: int, read: int, total: int,
                          began: float) -> None:
        rate = read / max(time.monotonic() - began, 1e-6)
        progress = Progress(Phase.RESTORE, read, total, rate)
        self._events.publish("xend.domain.restore.progress",
                             [name, str(domid), progress.sxpr()])

    @contextlib.contextmanager
    def _restorable(self, path: Path, info: sxp.Value) -> Iterator[DomainConfig]:
        """The saved domain's config, its name held for this restore, once it is known
        that the name is free."""
        vm = sxp.child_value(info, "config")
        if vm is None:
            raise BadRequest(f"{path} holds no (config (vm ...)) for the domain")
        config = parse_domain_config(vm)
        with self._context.moving.held(config.name, "restored"):
            if config.name in ask(self._table.names()):
                raise Conflict(f"Error restoring domain: vm name clash: {config.name}")
            yield config

    # --- migrate -------------------------------------------------------------------------

    def migrate(self, dom: str, destination: str, live: bool = False, resource: int = 0) -> str:
        """Move domain ``dom`` to the xend listening for relocation at ``destination``
        (``host`` or ``host:port``, port 8002 by default), streaming at most ``resource``
        Mbit/s (0: no limit); the new domain's URL once it runs there."""
        if self._streams:
            self._require("describe", "send_state", "resume", what="migration")
        else:
            self._require("save_state", "resume", "memory_pages", "dirty_pages",
                          "read_pages", what="migration")
        if resource < 0:
            raise BadRequest(f"resource must be 0 or a Mbit/s limit, got {resource}")
        try:
            host, port = xfr.parse_destination(destination)
        except xfr.XfrError as error:
            raise BadRequest(error.message) from None
        domain, info, name, domid = self._leaving(dom, "migrate")
        with self._context.moving.held(name, "migrated"):
            return self._run_migrate(domain, name, domid, info, host, port, live, resource)

    def _run_migrate(self, domain: pykka.ActorProxy, name: str, domid: int,
                     info: sxp.Value, host: str, port: int, live: bool,
                     resource: int) -> str:
        """The migration, recorded as a session from its begin to its ok or error."""
        ids = [name, str(domid)]
        was_paused = "p" in str(sxp.child_value(info, "state", ""))
        session = MigrateRecord(self._session_id(), SessionState.BEGIN, live,
                                Source(socket.gethostname(), domid), Destination(host),
                                resource, self._paused_field(was_paused))

        def record(state: SessionState, dst: Destination = session.dst) -> None:
            self._announce("xend.domain.migrate", ids, replace(session, state=state, dst=dst))

        def report(progress: Progress) -> None:
            self._events.publish("xend.domain.migrate.progress", [*ids, progress.sxpr()])

        record(SessionState.BEGIN)
        log.info("Migrating domain %s (id %s) to %s:%s, live %s, %s Mbit/s", name, domid,
                 host, port, live, resource or "unlimited")
        started = time.monotonic()
        try:
            if self._streams:
                newid, downtime = outgoing.send_stream(
                    self._driver, self._table, domid, info, (host, port), live, resource,
                    report, lambda newid: record(SessionState.COMMIT, Destination(host, newid)))
            else:
                newid, downtime = outgoing.send(
                    self._driver, self._table, domain, domid, info, (host, port), live,
                    lambda channel, domid: Sender(channel, self._driver, domid, resource,
                                                  report))
        except Exception as error:
            log.error("Migrating domain %s to %s:%s failed: %s", name, host, port, error)
            record(SessionState.ERROR)
            self._sessions.delete(session.id)
            raise _failed("migrate", error) from None
        duration = time.monotonic() - started
        record(SessionState.OK, Destination(host, newid, downtime, duration))
        self._sessions.delete(session.id)
        log.info("Migrated domain %s to %s:%s as domain %s in %.3f s; it was stopped "
                 "for %.3f s", name, host, port, newid, duration, downtime)
        return f"http://{host}:{port}/xend/domain/{newid}"

    # --- inside ------------------------------------------------------------------------------

    def _leaving(self, dom: str, verb: str) -> tuple[pykka.ActorProxy, sxp.Value, str, int]:
        """The Domain actor, info, name and id of ``dom``, about to ``verb`` it away."""
        domain = ask(self._table.find(dom, guest_only=True))
        info = ask(self._table.info(dom))
        if info.config is None:
            raise Conflict(f"cannot {verb} domain {info.name}: xend has no configuration "
                           "for it")
        return domain, info.sxpr(), info.name, info.domid

    def _session_id(self) -> str:
        return str(next(self._context.ids))

    def _keep(self, record: SessionRecord) -> None:
        """Keep ``record`` in the store's ``migrate/`` while its transfer runs."""
        self._sessions.write(record.id, records.to_sxpr(record))

    def _announce(self, event: str, ids: list[str], record: SaveRecord | MigrateRecord) -> None:
        """Keep ``record`` and publish it: ``(NAME ID STATE RECORD)``."""
        value = records.to_sxpr(record)
        self._sessions.write(record.id, value)
        self._events.publish(event, [*ids, record.state.value, value])

    def _paused_field(self, was_paused: bool) -> bool | None:
        """A stream driver's session says whether the guest was paused, so a xend that
        starts again after it died mid-transfer knows whether to let the guest run (a sim
        guest's suspend says it by itself)."""
        return was_paused if self._streams else None

    @property
    def _streams(self) -> bool:
        """Whether the driver's state is a stream (qemu) rather than bytes and pages."""
        return callable(getattr(self._driver, "send_state", None))

    def _require(self, *calls: str, what: str = "save and restore") -> None:
        if not all(callable(getattr(self._driver, call, None)) for call in calls):
            raise XendError(f"{what} {'is' if what == 'migration' else 'are'} not available "
                            f"yet with the {type(self._driver).__name__} hypervisor driver",
                            status=501)



class TransferSessionProxy(ActorMemberMixin, pykka.ActorProxy[TransferSession]):
    save = proxy_method(TransferSession.save)
    restore = proxy_method(TransferSession.restore)
    migrate = proxy_method(TransferSession.migrate)


def _failed(what: str, error: Exception) -> XendError:
    if isinstance(error, XendError):
        return XendError(f"{what} failed: {error.message}", status=error.status)
    return XendError(f"{what} failed: {error}")
