"""The Domain actor: one domain's life as xend runs it (the original XendDomainInfo).

It builds the domain, pauses and unpauses it, asks it to shut down, sets its memory
and scheduling, destroys it, and rebuilds it on restart: every driver call about this
domain is made here, on its own thread, so a slow guest holds up nobody else. It owns
the domain's ``DomainRecord`` and its store file ``domain/<id>``, written atomically
before any reply; every new record is told to the DomainTable. It never asks the table
anything (the table asks it), so the two can never wait on each other: what the table
must know (a new record, that the domain is being destroyed, that it is gone) it is told.

When the domain dies (the table's reaper tells ``exited``) or xend destroys it
(``destroy``), it is destroyed here: its devices let go, the hypervisor's domain
destroyed, then restarted per its restart mode (``restart.py``) or forgotten.

Requests bring their deadline (``actors.Deadline``): what the domain asks its device
controllers gets the inner one, so its own caller hears first why a controller did not
answer. A second destroy that arrives while one runs waits for it and joins it: it
finds the domain gone and answers as the first did, without running again.

It is ``Supervised``: a bug in a handler stops it, its callers get 503 at once, its
controllers stop, and the table starts a new Domain actor from the store's record.

Its console (``console/hub.py``) opens when it is built, is re-attached when it is
rebuilt on restart, and closes when the domain is gone for good. Its devices are a
``DomainDevices`` (``devices.py``); the record keeps each device's info.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import Deadline, Supervised, ask, proxy_of
from xend_actors.console.hub import ConsolesProxy
from xend_actors.device.config import Device, VbdConfig, VifConfig
from xend_actors.device.info import DeviceInfo, VbdInfo
from xend_actors.domain.config import DomainConfig, with_device, without_device
from xend_actors.domain.devices import (
    DeviceServices,
    DomainDevices,
    find_device,
    kind_named,
    kind_of,
    next_idx,
    position,
    sxp_kind,
)
from xend_actors.domain.record import DomainRecord, RestartState, VifChange, store_sxpr
from xend_actors.domain.restart import restart_wanted, restarting_too_fast
from xend_actors.errors import BadRequest, Conflict, HypervisorError, NotFound, XendError
from xend_actors.events.bus import EventBusProxy
from xend_actors.hypervisor.base import Driver, HvDomain, SchedParams, ShutdownReason
from xend_actors.hypervisor.ring import messages
from xend_actors.store import RecordDir, Staged, StoreError
from xend_actors.trace import TracedActor

if TYPE_CHECKING:
    from xend_actors.domain.table import DomainTableProxy

log = logging.getLogger(__name__)

CREATE_EVENT = "xend.domain.create"


class BuildPhase(Enum):
    """How far a build got: ``(progress (phase P))`` of ``xend.domain.create.progress``."""

    LOADED = "loaded"  # the image is loaded (a qemu guest: its machine launched)
    DEVICES = "devices"  # its vbds and vifs attached
    CONSOLE = "console"  # its console open; ``xend.domain.create`` follows


CONSOLE_TIMEOUT = 30.0  # opening a console waits for the hypervisor's console channel


@dataclass(frozen=True)
class DomainServices:
    """What every Domain actor shares: the driver and the actors it tells or asks."""

    driver: Driver
    events: EventBusProxy
    consoles: ConsolesProxy
    records: RecordDir  # the store's domain/ folder
    devices: DeviceServices
    minimum_restart_time: float
    clock: Callable[[], float] = time.time


class Domain(Supervised, TracedActor):
    # Python 3.11 walks every live non-daemon thread on each thread start, which made
    # creates slower as domains grew; Domain threads hold nothing a stop must wait for.
    use_daemon_thread = True

    def __init__(self, record: DomainRecord, table: DomainTableProxy,
                 services: DomainServices) -> None:
        super().__init__()
        self.record = record
        self._table = table
        self._driver = services.driver
        self._events = services.events
        self._consoles = services.consoles
        self._records = services.records
        self._services = services
        self._clock = services.clock
        self._devices: DomainDevices | None = None
        self._proxy: DomainProxy | None = None
        self._forgotten = False  # gone for good: a late destroy or exit joins, not repeats
        self._restart_scheduled = False  # ``restart`` is told and not yet run

    def on_start(self) -> None:
        self._devices = DomainDevices(self.domid, lambda: self.record.name,
                                      driver=self._driver, services=self._services.devices,
                                      owner=self._own_proxy,
                                      devices=lambda: self.record.devices)

    def _own_proxy(self) -> DomainProxy:
        """This actor's proxy, made when first needed: a proxy costs a walk over the
        actor's attributes, and most domains never need their own."""
        if self._proxy is None:
            self._proxy = proxy_of(self.actor_ref, DomainProxy)
        return self._proxy

    def on_stop(self) -> None:
        self._held_devices.stop()

    def describe(self) -> str:
        return f"the actor of domain {self.record.name} (id {self.domid})"

    def tell_supervisor(self, error: Exception) -> None:
        """It failed: its controllers stop with it, and the table starts a new one."""
        if self._devices is not None:
            self._devices.stop()
        self._table.domain_failed(self.domid, self.actor_ref)

    @property
    def domid(self) -> int:
        return self.record.domid

    @property
    def _held_devices(self) -> DomainDevices:
        assert self._devices is not None, "made in on_start"
        return self._devices

    def _ids(self) -> list[str]:
        return [self.record.name, str(self.domid)]

    def _update(self, *, durable: bool = True, **changes: Any) -> DomainRecord:
        """Replace the record, persist it (not ``durable``: not fsynced, for what is read
        only while the domain lives, which a host crash ends), then tell the table.
        Never once the domain is forgotten: a request queued behind its end would write
        its record back."""
        if self._forgotten:
            raise NotFound(f"domain {self.record.name} is gone")
        self.record = replace(self.record, **changes)
        self.save(durable)
        self._table.record_changed(self.record)
        return self.record

    def _staged(self, *, durable: bool = True,
                **changes: Any) -> tuple[DomainRecord, Staged]:
        """``_update`` in two steps: the record with ``changes``, written beside the stored
        one, which ``_put`` puts in place; StoreError as ``_update``'s."""
        record = replace(self.record, **changes)
        return record, self._records.stage(str(self.domid), store_sxpr(record, self._clock()),
                                           sync=durable)

    def _put(self, record: DomainRecord, staged: Staged) -> DomainRecord:
        """``record``, ``staged`` beside the stored one, becomes the domain's, in place in
        the store; the caller tells the table (``announce``)."""
        if self._forgotten:
            staged.discard()
            raise NotFound(f"domain {self.record.name} is gone")
        self.record = record
        staged.commit()
        return record

    def _note(self, *, durable: bool = True, **changes: Any) -> DomainRecord:
        """``_update`` for what must go on when the store cannot be written (a full
        disk): a domain's own life (shut down, destroyed, restarted) is not held up by
        the store; its record is written again with the next change that can be."""
        try:
            return self._update(durable=durable, **changes)
        except StoreError as error:
            log.warning("Domain %s goes on without its record updated: %s",
                        self.record.name, error.message)
            self._table.record_changed(self.record)
            return self.record

    def save(self, durable: bool = True) -> None:
        self._records.write(str(self.domid), store_sxpr(self.record, self._clock()),
                            sync=durable)

    # --- building -------------------------------------------------------------------

    def build(self, deadline: Deadline | None = None) -> DomainRecord:
        """Load the image into the empty paused domain; on failure destroy it, leave nothing."""
        try:
            console_port = self._build(self._config(), deadline)
            # A domain whose record cannot be written (a full disk) is not made at all.
            # Written while a qemu may still be making the machine, and put in place (a
            # rename) once it answers: the record is there only for a whole domain.
            # Not fsynced: a host crash that lost it takes the new domain too.
            record, staged = self._staged(start_time=self._clock(),
                                          console_port=console_port, durable=False)
            try:
                self._ready()
            except BaseException:
                staged.discard()
                raise
            record = self._put(record, staged)
        except Exception as error:
            message = error.message if isinstance(error, XendError) else str(error)
            died = self._died_while_built()  # asked before it is destroyed below
            self._abandon()
            if died is not None:
                raise HypervisorError(f"Error creating domain: {died} (then: {message})") \
                    from None
            raise XendError(f"Error creating domain: {message}",
                            status=getattr(error, "status", 500)) from None
        # With its record and the reading, the table's snapshot shows the new domain
        # whole: the web answers the create from it.
        self._table.announce(CREATE_EVENT, self._ids(), self._reading(), record)
        return record

    def _died_while_built(self) -> str | None:
        """What to say if the hypervisor lost the domain while xend built it; None if it
        did not. A guest that never ran cannot crash by itself: its hypervisor's process
        for it died (a qemu), and whatever failed then (a vif script that found no tap)
        only followed from that."""
        try:
            hv = self._driver.domain(self.domid)
        except NotFound:
            return f"domain {self.record.name} vanished from the hypervisor while it was built"
        except XendError:
            return None
        if not hv.state.crashed:
            return None
        return (f"the {self._driver.kind} process of domain {self.record.name} died while "
                "the domain was built")

    def _build(self, config: DomainConfig, deadline: Deadline | None = None) -> int:
        """Load the image, attach the devices and open (or re-attach) the console; returns
        the console's port, the domain perhaps not yet ready (``Driver.ready``). Each step
        done is a ``xend.domain.create.progress`` event, so a client whose request timed
        out (a qemu guest can take seconds) can follow it."""
        self._driver.build(self.domid, config.image.image())
        self._progress(BuildPhase.LOADED)
        self.record = replace(self.record, devices=self._held_devices.attach_all(
            config.devices, deadline))
        if config.maxmem_mb is not None:
            self._driver.set_maxmem(self.domid, config.maxmem_mb)
        self._progress(BuildPhase.DEVICES)
        try:
            port = self._open_console(config)  # while a qemu may still be making the machine
        except XendError:
            self._driver.ready(self.domid)  # a qemu that died meanwhile says why, first
            raise
        return port

    def _ready(self) -> None:
        """Wait until the domain just built is whole (``Driver.ready``)."""
        self._driver.ready(self.domid)
        self._progress(BuildPhase.CONSOLE)

    def _progress(self, phase: BuildPhase) -> None:
        self._events.publish(f"{CREATE_EVENT}.progress",
                             [*self._ids(), ["progress", ["phase", phase.value]]])

    def _open_console(self, config: DomainConfig, *, running: bool = False) -> int:
        """Open (or re-attach) the console; a ``running`` domain's (recovered, restored,
        migrated in) is not failed by a busy TCP port: it listens once the port is free."""
        port = self.record.console_port or config.console_port
        channel = self._driver.open_console(self.domid)
        info = ask(self._consoles.open(self.domid, channel, port, running=running),
                   "the consoles", CONSOLE_TIMEOUT)
        return info.port

    def _close_console(self) -> None:
        try:
            ask(self._consoles.close(self.domid), "the consoles", CONSOLE_TIMEOUT)
        except (XendError, pykka.ActorDeadError) as error:
            log.warning("Closing the console of domain %s failed: %s", self.domid, error)

    def _config(self) -> DomainConfig:
        if self.record.config is None:
            raise Conflict(f"domain {self.domid} has no configuration")
        return self.record.config

    def _abandon(self) -> None:
        """Undo a failed build: destroy the domain, forget it, stop."""
        # Forgotten at once: a request queued behind this one (a hot-plug, say) must not
        # write the record back before the stop, or a next xend would rebuild the domain
        # beside the one made under its name meanwhile.
        self._forgotten = True
        with contextlib.suppress(XendError):
            self._driver.destroying(self.domid)
        self._held_devices.release()
        try:
            self._driver.destroy(self.domid)
        except XendError as error:
            log.warning("Destroying half-built domain %s failed: %s", self.domid, error)
        self._close_console()
        self._records.delete(str(self.domid))
        self._table.gone(self.domid)
        self.stop()  # pykka's: stops after this message, without waiting

    def configure(self, config: DomainConfig, deadline: Deadline | None = None) -> DomainRecord:
        """Give an adopted bare domain its configuration (restore and migration), its
        devices attached within ``deadline``."""
        if self.record.config is not None:
            raise Conflict(f"Domain already configured: {self.domid}")
        self.record = replace(self.record, config=config, name=config.name)
        try:
            self.record = replace(self.record,
                                  devices=self._held_devices.attach_all(config.devices,
                                                                        deadline))
            console_port = self._open_console(config, running=True)
        except XendError:
            self._held_devices.release()
            self.record = replace(self.record, config=None, devices=())
            raise
        return self._update(start_time=self._clock(), console_port=console_port)

    def recover(self) -> None:
        """xend restarted and found the domain alive: its devices known again, its console
        back on the same port. What a stopped xend left half done is finished: a hot-plug
        or a vif's change is undone (it was never acknowledged), a destroy carried through
        (its devices may be half released: a vif off its bridge)."""
        try:
            self._held_devices.adopt(self.record.devices)
        except XendError as error:
            log.error("Domain %s recovered without its devices: %s", self.record.name, error)
        if self.record.ending:
            log.warning("Domain %s was being destroyed when xend stopped; destroying it",
                        self.record.name)
            self._finish()
            return
        if self.record.config is None:
            return
        if (self.record.plugging, self.record.unplugging,
                self.record.configuring) != (None, None, None):
            # Next, not now: a guest can take seconds to let go, and xend's start waits here.
            self._own_proxy().finish_device_work()
        try:
            console_port = self._open_console(self.record.config, running=True)
        except XendError as error:
            log.error("Domain %s recovered without its console: %s", self.record.name, error)
            return
        if console_port != self.record.console_port:
            self._update(console_port=console_port)

    def finish_device_work(self) -> None:
        """Undo the hot-plug or the vif's change, or carry through the device_destroy,
        that a stopped xend left unfinished (``recover``)."""
        if self._forgotten:
            return
        self._undo_plugging()
        self._undo_configuring()
        unplugging = self.record.unplugging
        if unplugging is None:
            return
        kind = sxp_kind(VbdConfig if isinstance(unplugging, VbdInfo) else VifConfig)
        log.warning("Domain %s: finishing the destroy of %s %s that xend was making when "
                    "it stopped", self.record.name, kind, unplugging.idx)
        try:
            self.device_destroy(kind, unplugging.idx)  # refused (a paused guest): kept, up
        except XendError as error:
            log.warning("Domain %s keeps %s %s: %s", self.record.name, kind, unplugging.idx,
                        error.message)

    def _undo_configuring(self, deadline: Deadline | None = None) -> None:
        change = self.record.configuring
        if change is None:
            return
        log.warning("Domain %s: putting vif %s back as it was before the change xend was "
                    "making to it", self.record.name, change.idx)
        try:
            self._held_devices.undo_vif_change(change.idx, change.vif, deadline)
        except XendError as error:
            log.error("Domain %s: putting vif %s back failed: %s", self.record.name,
                      change.idx, error.message)
        self._note(configuring=None)

    def _undo_plugging(self) -> None:
        device, config = self.record.plugging, self.record.config
        if device is None or config is None:
            return
        kind = kind_of(device)
        idx = next_idx(self.record.devices, kind)
        log.warning("Domain %s: undoing the hot-plug of %s %s that xend was making when it "
                    "stopped", self.record.name, sxp_kind(kind), idx)
        try:
            kept = self._held_devices.undo(idx, device)
        except XendError as error:
            log.error("Domain %s: undoing the hot-plug of %s %s failed: %s",
                      self.record.name, sxp_kind(kind), idx, error.message)
            kept = None
        if kept is None:
            self._note(plugging=None)
        else:  # plugged for good: known, so that it can go later
            self._note(plugging=None, config=with_device(config, device),
                       devices=(*self.record.devices, kept))

    # --- running --------------------------------------------------------------------

    def pause(self) -> pykka.Future[None]:
        """Pause it; the answer is the table's to the announcement, done once its
        snapshot shows the domain paused (the web waits on it before it replies)."""
        self._driver.pause(self.domid)
        return self._table.announce("xend.domain.pause", self._ids(), self._reading())

    def unpause(self) -> pykka.Future[None]:
        """Let it run; the answer is as ``pause``'s."""
        self._driver.unpause(self.domid)
        return self._table.announce("xend.domain.unpause", self._ids(), self._reading())

    def reread(self) -> pykka.Future[None] | None:
        """Tell the table the hypervisor's reading now, after a change (made here, or
        behind this actor: a failed transfer's resume), so its info shows the change
        before the reply or the event does; the table's answer comes once its snapshot
        shows it. None if the domain has no reading (it is gone)."""
        hv = self._reading()
        return None if hv is None else self._table.state_changed(hv)

    def _reading(self) -> HvDomain | None:
        try:
            return self._driver.domain(self.domid)
        except XendError:
            return None  # gone, or the helper lost: the table hears of that from the driver

    def shutdown(self, reason: ShutdownReason, key: str = "") -> DomainRecord:
        """Ask the guest to shut down; ``halt`` cancels any restart, ``reboot`` forces one."""
        if reason is ShutdownReason.SYSRQ and len(key) != 1:
            raise BadRequest(f"invalid sysrq key {key[:20]!r}: give one character (b "
                             "reboots, s syncs, o powers off...) or its ASCII code")
        if reason is ShutdownReason.SUSPEND and self.record.restart_state is not None:
            # The guest acts on the reboot first and is rebuilt: it would never suspend,
            # and a save or migration would wait for it in vain.
            raise Conflict(f"domain {self.record.name} is rebooting: it cannot be suspended")
        record = self._request(reason)
        self._events.publish("xend.domain.shutdown", [*self._ids(), reason.value])
        self._driver.shutdown(self.domid, reason, key)
        return record

    def _request(self, reason: ShutdownReason) -> DomainRecord:
        pending = self.record.restart_state is RestartState.PENDING
        if self.record.ending and not pending and reason is not ShutdownReason.HALT:
            # Its destroy was cut off (the hypervisor's helper lost, say): it is to end,
            # and nothing may bring it back, as a reboot would.
            raise Conflict(f"domain {self.record.name} is being destroyed")
        if reason is ShutdownReason.HALT and pending:
            self._events.publish("xend.domain.restart", [*self._ids(), "cancel"])
            return self._note(shutdown_request=reason, restart_state=None)
        if reason is ShutdownReason.REBOOT and not pending:
            self._events.publish("xend.domain.restart", [*self._ids(), "schedule"])
            return self._note(shutdown_request=reason, restart_state=RestartState.PENDING)
        # Read when the domain ends (``exited``): of no use once a host crash ended it.
        return self._note(shutdown_request=reason, durable=False)

    def suspended(self) -> None:
        self._events.publish("xend.domain.suspended", self._ids())

    # --- its end ----------------------------------------------------------------------

    def destroy(self, reason: ShutdownReason, deadline: Deadline | None = None) -> None:
        """xend destroys the domain: ``halt`` cancels a restart, ``reboot`` forces one.
        Returns once it is destroyed (and forgotten, unless it restarts); a destroy that
        waited behind another finds it done and joins it."""
        if self._forgotten:
            return
        self._request(reason)
        self._finish(deadline)

    def exited(self, reason: ShutdownReason) -> None:
        """The reaper found the domain dead for ``reason``: destroy it, then restart it if
        its mode or xend's last request says so."""
        if self._forgotten:
            return
        config = self.record.config
        restart = config is not None and restart_wanted(config.restart, reason,
                                                        self.record.shutdown_request)
        schedule = restart and self.record.restart_state is not RestartState.PENDING
        reported = self.record.ending  # by a xend stopped before the domain's end
        # Recorded before it is told, so that a xend stopped after telling does not tell
        # again: the next one finishes the end without a word.
        changes: dict[str, Any] = {} if reported else {"ending": True}
        if schedule:
            changes["restart_state"] = RestartState.PENDING
        if changes:
            self._note(**changes)
        if not reported:
            self._events.publish("xend.domain.exit", [*self._ids(), reason.value])
        if schedule:
            self._events.publish("xend.domain.restart", [*self._ids(), "schedule"])
        self._finish()

    def crashed_with_hypervisor(self) -> None:
        """The hypervisor's helper died and a new one runs without the domain: it crashed,
        whatever was being done to it (a destroy the lost connection broke off, a pending
        reboot), and its restart rules apply. Unless it is already handled: forgotten, a
        restart already scheduled, or rebuilt on the new helper meanwhile (its ids are
        new, so a domain of this id is this one)."""
        if self._forgotten or self._restart_scheduled:
            return
        try:
            self._driver.domain(self.domid)
        except NotFound:
            pass
        except XendError as error:  # lost again: crashed all the same
            log.warning("Domain %s: %s", self.record.name, error.message)
        else:
            self._table.settled(self.domid, self._reading())
            return
        log.error("Domain %s (id %s) crashed with the hypervisor", self.record.name,
                  self.domid)
        self.exited(ShutdownReason.CRASH)

    def _finish(self, deadline: Deadline | None = None) -> None:
        """Destroy the domain in the hypervisor (facts §7.2), then restart or forget it."""
        self._table.finishing(self.domid)  # before the hypervisor can report it gone
        log.info("Destroying domain: name=%s", self.record.name)
        self._events.publish("xend.domain.destroy", self._ids())
        with contextlib.suppress(XendError):  # the destroy below says what is wrong
            self._driver.destroying(self.domid)
        if not self.record.ending:  # a xend stopped from here on finishes it at its start
            # Read only of a domain that lives (``recover``): no fsync for a host crash.
            self._note(ending=True, durable=False)
        self._held_devices.release(deadline)
        if self.record.devices:
            self._note(devices=(), durable=False)  # read only while it lives, as above
        pending = self.record.restart_state is RestartState.PENDING
        if not pending:
            self._close_console()  # a restart re-attaches it
        with contextlib.suppress(NotFound):  # already gone is what we wanted
            self._driver.destroy(self.domid)
        if not pending:
            self.forget()
        elif restarting_too_fast(self.record.restart_time, self._clock(),
                                 self._services.minimum_restart_time):
            log.error("VM %s restarting too fast", self.record.name)
            self._events.publish("xend.domain.restart", [*self._ids(), "fail"])
            self.forget()
        else:
            log.info("Scheduling restart for domain: name=%s id=%s", self.record.name,
                     self.domid)
            self._restart_scheduled = True
            self._own_proxy().restart()  # after this message: its caller need not wait

    def forget(self) -> None:
        """The domain is gone for good (destroyed here, or behind xend's back, and not to
        restart): close its console, drop its store record, tell the table and stop."""
        if self._forgotten:
            return
        self._forgotten = True
        self._close_console()
        self._records.delete(str(self.domid))
        self._table.gone(self.domid)
        self._table.announce("xend.domain.died", self._ids())
        self.stop()  # pykka's: stops after this message, without waiting

    def restart(self) -> None:
        """Rebuild the domain with the same name, id and start time, then unpause it."""
        self._restart_scheduled = False
        config = self._config()
        self._note(restart_state=RestartState.BOOTING, restart_time=self._clock(), ending=False)
        self._events.publish("xend.domain.restart", [*self._ids(), "begin"])
        log.info("Restarting domain: id=%s name=%s", self.domid, self.record.name)
        try:
            self._driver.create(config.name, config.memory_mb, cpu=config.cpu, domid=self.domid)
            self._build(config)
            self._ready()
            self._driver.unpause(self.domid)
        except XendError as error:
            log.error("Restart of domain %s failed: %s", self.record.name, error)
            self._events.publish("xend.domain.restart", [*self._ids(), "fail"])
            self._abandon()
            return
        self._note(restart_state=None, shutdown_request=None)
        self._table.settled(self.domid, self._reading())
        self._table.announce("xend.domain.restart", [*self._ids(), "success"])

    # --- devices ---------------------------------------------------------------------------

    def device_create(self, device: Device, deadline: Deadline | None = None) -> DeviceInfo:
        """Hot-plug ``device`` and add it to the config; nothing changes if it fails."""
        config = self._config()
        kind = kind_of(device)
        before = self._update(plugging=device)  # the intent: a xend stopped midway undoes it
        try:
            info = self._held_devices.attach(next_idx(self.record.devices, kind), device,
                                             deadline)
        except XendError as error:
            self._note(plugging=None)
            self._not_running(error)
            raise
        try:
            self._update(config=with_device(config, device), devices=(*before.devices, info),
                         plugging=None)
        except StoreError:
            # Not recorded (a full disk): unplugged again, or a next xend would adopt the
            # domain without it and its backend (a tap) be left behind.
            self.record = replace(before, plugging=None)
            try:
                self._held_devices.detach(kind, info.idx, deadline)
            except XendError as error:  # still plugged: known, so that it can go later
                log.warning("Domain %s keeps %s %s, which it could not unplug: %s",
                            before.name, sxp_kind(kind), info.idx, error.message)
                self._note(config=with_device(config, device),
                           devices=(*before.devices, info), plugging=None)
            raise
        self._events.publish("xend.domain.device.create", [*self._ids(), sxp_kind(kind)])
        return info

    def _not_running(self, error: XendError) -> None:
        """A backend's failure while the domain is not running says so: it restarts (409:
        a reboot is under way, its old qemu or guest gone), it shut down (409), it crashed
        (500, a true one: its hypervisor's process died), or the hypervisor no longer has
        it (404: saved, migrated or destroyed while the request waited)."""
        if error.status < 500:
            return
        name = self.record.name
        if self.record.restart_state is not None:
            raise Conflict(f"domain {name} is restarting; try again once it runs "
                           f"({error.message})")
        try:
            hv = self._driver.domain(self.domid)
        except NotFound:
            raise NotFound(f"domain {name} is gone: {error.message}") from None
        except XendError:
            return
        if hv.state.crashed:
            raise HypervisorError(f"domain {name} crashed (its {self._driver.kind} process "
                                  f"died?): {error.message}")
        if hv.state.dead:
            why = hv.shutdown_reason.value if hv.shutdown_reason is not None else "shut down"
            raise Conflict(f"domain {name} has shut down ({why}); it takes no devices: "
                           f"{error.message}")

    def device_configure(self, kind_name: str, idx: int, device: Device,
                         deadline: Deadline | None = None) -> DeviceInfo:
        """Change vif ``idx``'s bridge, script or addresses; a vbd cannot be changed."""
        kind = kind_named(kind_name)
        if kind is not VifConfig or not isinstance(device, VifConfig):
            raise BadRequest(f"{kind_name} {idx}: only a vif's bridge, script and ip can be "
                             "changed; destroy the device and create it anew")
        old = find_device(self.record.devices, VifConfig, idx, self.record.name)
        # the intent: a xend stopped midway puts the vif back as it was
        self._update(configuring=VifChange(idx, device))
        try:
            info = self._held_devices.configure_vif(idx, device, deadline)
        except XendError:
            self._note(configuring=None)  # the controller put it back as it was
            raise
        config = without_device(self._config(), VifConfig,
                                position(self.record.devices, old), device)
        try:
            self._update(config=config, devices=tuple(info if d is old else d
                                                      for d in self.record.devices),
                         configuring=None)
        except StoreError:
            # Not recorded (a full disk): put back as the record says, as a next xend would.
            self._undo_configuring(deadline)
            raise
        return info

    def device_destroy(self, kind_name: str, idx: int, deadline: Deadline | None = None) -> None:
        """Unplug device ``idx`` of the kind and drop it from the config."""
        kind = kind_named(kind_name)
        info = find_device(self.record.devices, kind, idx, self.record.name)
        at = position(self.record.devices, info)
        self._update(unplugging=info)  # the intent: a xend stopped midway carries it through
        try:
            self._held_devices.detach(kind, idx, deadline)
        except XendError:
            self._note(unplugging=None)  # refused: the device is as it was
            raise
        self._update(config=without_device(self._config(), kind, at),
                     devices=tuple(d for d in self.record.devices if d is not info),
                     unplugging=None)
        self._events.publish("xend.domain.device.destroy", [*self._ids(), kind_name])

    def device_changed(self, info: DeviceInfo) -> None:
        """A controller's news about a device (a frontend connected)."""
        kind = type(info)
        self._update(devices=tuple(info if type(d) is kind and d.idx == info.idx else d
                                   for d in self.record.devices))

    def guest_message(self, message: messages.Message) -> None:
        """A control message from the domain's frontends: to the controller of its kind."""
        self._held_devices.frontend(message)

    # --- memory and scheduling ------------------------------------------------------------

    def set_maxmem(self, memory_mb: int) -> None:
        self._driver.set_maxmem(self.domid, _positive("memory", memory_mb))
        self.reread()

    def set_memory_target(self, target_mb: int) -> None:
        self._driver.set_memory_target(self.domid, _positive("target", target_mb))
        self.reread()

    def pincpu(self, cpu: int) -> None:
        self._driver.pincpu(self.domid, cpu)
        self.reread()

    def set_sched(self, params: SchedParams) -> None:
        self._driver.set_sched(self.domid, params)


class DomainProxy(ActorMemberMixin, pykka.ActorProxy[Domain]):
    """A Domain actor, as the table, the web and transfers reach it."""

    save = proxy_method(Domain.save)
    build = proxy_method(Domain.build)
    configure = proxy_method(Domain.configure)
    recover = proxy_method(Domain.recover)
    finish_device_work = proxy_method(Domain.finish_device_work)
    pause = proxy_method(Domain.pause)
    unpause = proxy_method(Domain.unpause)
    reread = proxy_method(Domain.reread)
    shutdown = proxy_method(Domain.shutdown)
    suspended = proxy_method(Domain.suspended)
    destroy = proxy_method(Domain.destroy)
    exited = proxy_method(Domain.exited)
    crashed_with_hypervisor = proxy_method(Domain.crashed_with_hypervisor)
    forget = proxy_method(Domain.forget)
    restart = proxy_method(Domain.restart)
    device_create = proxy_method(Domain.device_create)
    device_configure = proxy_method(Domain.device_configure)
    device_destroy = proxy_method(Domain.device_destroy)
    device_changed = proxy_method(Domain.device_changed)
    guest_message = proxy_method(Domain.guest_message)
    set_maxmem = proxy_method(Domain.set_maxmem)
    set_memory_target = proxy_method(Domain.set_memory_target)
    pincpu = proxy_method(Domain.pincpu)
    set_sched = proxy_method(Domain.set_sched)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise BadRequest(f"invalid {name} {value}: give a whole number of MiB, at least 1")
    return value
