"""The Domain actor: one domain's life as xend runs it (the original XendDomainInfo).

It builds the domain, pauses and unpauses it, asks it to shut down, sets its memory
and scheduling, and rebuilds it on restart. It owns the domain's ``DomainRecord``
and its store file ``domain/<id>``, written atomically before any reply; every new
record is told to the DomainTable. It never asks the table anything (the table
asks it), so the two can never wait on each other.

Its console (``console/hub.py``) opens when it is built, is re-attached when it is
rebuilt on restart, and closes when the domain is gone for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import pykka

from xend_actors.domain.config import DomainConfig
from xend_actors.domain.record import DomainRecord, RestartState, store_sxpr
from xend_actors.errors import BadRequest, Conflict, Timeout, XendError
from xend_actors.hypervisor.base import Driver, SchedParams, ShutdownReason
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

CONSOLE_TIMEOUT = 30.0  # opening a console waits for the hypervisor's console channel

SHUTDOWN_REASONS = {r.value: r for r in (ShutdownReason.POWEROFF, ShutdownReason.REBOOT,
                                         ShutdownReason.HALT, ShutdownReason.SUSPEND,
                                         ShutdownReason.SYSRQ)}


class Domain(TracedActor):
    # Python 3.11 walks every live non-daemon thread on each thread start, which made
    # creates slower as domains grew; Domain threads hold nothing a stop must wait for.
    use_daemon_thread = True

    def __init__(self, record: DomainRecord, *, driver: Driver, events: pykka.ActorProxy,
                 consoles: pykka.ActorProxy, table: pykka.ActorProxy, records: RecordDir,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.record = record
        self._driver = driver
        self._events = events
        self._consoles = consoles
        self._table = table
        self._records = records
        self._clock = clock

    @property
    def domid(self) -> int:
        return self.record.domid

    def _ids(self) -> list[str]:
        return [self.record.name, str(self.domid)]

    def _update(self, **changes: object) -> DomainRecord:
        """Replace the record, persist it, then tell the table."""
        self.record = replace(self.record, **changes)  # type: ignore[arg-type]
        self.save()
        self._table.record_changed(self.record)
        return self.record

    def save(self) -> None:
        self._records.write(str(self.domid), store_sxpr(self.record, None, self._clock()))

    # --- building -------------------------------------------------------------------

    def build(self) -> DomainRecord:
        """Load the image into the empty paused domain; on failure destroy it, leave nothing."""
        try:
            console_port = self._build(self._config())
        except Exception as error:
            self._abandon()
            message = error.message if isinstance(error, XendError) else str(error)
            raise XendError(f"Error creating domain: {message}",
                            status=getattr(error, "status", 500)) from None
        record = self._update(start_time=self._clock(), console_port=console_port)
        self._events.publish("xend.domain.create", self._ids())
        return record

    def _build(self, config: DomainConfig) -> int:
        """Load the image and open (or re-attach) the console; returns the console's port."""
        self._driver.build(self.domid, config.image.image())
        if config.maxmem_mb is not None:
            self._driver.set_maxmem(self.domid, config.maxmem_mb)
        return self._open_console(config)

    def _open_console(self, config: DomainConfig) -> int:
        port = self.record.console_port or config.console_port
        try:
            info = self._consoles.open(self.domid, port).get(timeout=CONSOLE_TIMEOUT)
        except pykka.Timeout:
            raise Timeout(f"the consoles did not answer within {CONSOLE_TIMEOUT:g} s") from None
        return info.port

    def _close_console(self) -> None:
        try:
            self._consoles.close(self.domid).get(timeout=CONSOLE_TIMEOUT)
        except (XendError, pykka.Timeout, pykka.ActorDeadError) as error:
            log.warning("Closing the console of domain %s failed: %s", self.domid, error)

    def _config(self) -> DomainConfig:
        if self.record.config is None:
            raise Conflict(f"domain {self.domid} has no configuration")
        return self.record.config

    def _abandon(self) -> None:
        """Undo a failed build: destroy the domain, forget it, stop."""
        try:
            self._driver.destroy(self.domid)
        except XendError as error:
            log.warning("Destroying half-built domain %s failed: %s", self.domid, error)
        self._close_console()
        self._records.delete(str(self.domid))
        self._table.forget(self.domid)
        self.stop()  # pykka's: stops after this message, without waiting

    def configure(self, config: DomainConfig) -> DomainRecord:
        """Give an adopted bare domain its configuration (restore and migration)."""
        if self.record.config is not None:
            raise Conflict(f"Domain already configured: {self.domid}")
        console_port = self._open_console(config)
        return self._update(config=config, name=config.name, start_time=self._clock(),
                            console_port=console_port)

    def recover(self) -> None:
        """xend restarted and found the domain alive: its console back on the same port."""
        if self.record.config is None:
            return
        try:
            console_port = self._open_console(self.record.config)
        except XendError as error:
            log.error("Domain %s recovered without its console: %s", self.record.name, error)
            return
        if console_port != self.record.console_port:
            self._update(console_port=console_port)

    # --- running --------------------------------------------------------------------

    def pause(self) -> None:
        self._driver.pause(self.domid)
        self._events.publish("xend.domain.pause", self._ids())

    def unpause(self) -> None:
        self._driver.unpause(self.domid)
        self._events.publish("xend.domain.unpause", self._ids())

    def shutdown(self, word: str, key: str = "") -> DomainRecord:
        """Ask the guest to shut down; ``halt`` cancels any restart, ``reboot`` forces one."""
        reason = SHUTDOWN_REASONS.get(word)
        if reason is None:
            raise BadRequest(f"invalid reason:{word}")
        if reason is ShutdownReason.SYSRQ and len(key) != 1:
            raise BadRequest("sysrq needs a key: one character")
        record = self._request(reason)
        self._events.publish("xend.domain.shutdown", [*self._ids(), reason.value])
        self._driver.shutdown(self.domid, reason, key)
        return record

    def note_destroy(self, reason: ShutdownReason) -> DomainRecord:
        """Record why xend destroys the domain: ``halt`` cancels a restart, ``reboot`` forces."""
        return self._request(reason)

    def _request(self, reason: ShutdownReason) -> DomainRecord:
        pending = self.record.restart_state is RestartState.PENDING
        if reason is ShutdownReason.HALT and pending:
            self._events.publish("xend.domain.restart", [*self._ids(), "cancel"])
            return self._update(shutdown_request=reason, restart_state=None)
        if reason is ShutdownReason.REBOOT and not pending:
            self._events.publish("xend.domain.restart", [*self._ids(), "schedule"])
            return self._update(shutdown_request=reason, restart_state=RestartState.PENDING)
        return self._update(shutdown_request=reason)

    def exited(self, reason: ShutdownReason, restart: bool) -> DomainRecord:
        """The reaper found the domain dead for ``reason``; ``restart`` says what follows."""
        self._events.publish("xend.domain.exit", [*self._ids(), reason.value])
        if restart and self.record.restart_state is not RestartState.PENDING:
            self._events.publish("xend.domain.restart", [*self._ids(), "schedule"])
            return self._update(restart_state=RestartState.PENDING)
        return self.record

    def suspended(self) -> None:
        self._events.publish("xend.domain.suspended", self._ids())

    def release(self) -> None:
        """Let go of what the domain holds in xend before the hypervisor destroys it:
        the console, unless a restart will re-attach it. Devices join here as their
        controllers arrive."""
        if self.record.restart_state is not RestartState.PENDING:
            self._close_console()

    def forget(self) -> None:
        """The domain is gone for good: close its console, drop its store record and stop."""
        self._close_console()
        self._records.delete(str(self.domid))
        self.stop()  # pykka's: stops after this message, without waiting

    # --- restart ---------------------------------------------------------------------

    def restart(self) -> None:
        """Rebuild the domain with the same name, id and start time, then unpause it."""
        config = self._config()
        self._update(restart_state=RestartState.BOOTING, restart_time=self._clock())
        self._events.publish("xend.domain.restart", [*self._ids(), "begin"])
        log.info("Restarting domain: id=%s name=%s", self.domid, self.record.name)
        try:
            self._driver.create(config.name, config.memory_mb, cpu=config.cpu, domid=self.domid)
            self._build(config)
            self._driver.unpause(self.domid)
        except XendError as error:
            log.error("Restart of domain %s failed: %s", self.record.name, error)
            self._events.publish("xend.domain.restart", [*self._ids(), "fail"])
            self._abandon()
            return
        self._update(restart_state=None, shutdown_request=None)
        self._events.publish("xend.domain.restart", [*self._ids(), "success"])

    # --- memory and scheduling ------------------------------------------------------------

    def set_maxmem(self, memory_mb: int) -> None:
        self._driver.set_maxmem(self.domid, _positive("memory", memory_mb))

    def set_memory_target(self, target_mb: int) -> None:
        self._driver.set_memory_target(self.domid, _positive("target", target_mb))

    def pincpu(self, cpu: int) -> None:
        self._driver.pincpu(self.domid, cpu)

    def set_sched(self, params: SchedParams) -> None:
        self._driver.set_sched(self.domid, params)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise BadRequest(f"invalid {name}: {value} (must be at least 1)")
    return value
