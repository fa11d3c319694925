"""The Transfer actor (the original's xfrd): saving a domain to a file and restoring it.

It owns the transfer sessions: each save or restore is recorded under the store's
``migrate/`` folder while it runs and deleted at its end (facts §4.5, §7.5). The slow
work — waiting for the guest to suspend, writing the image — happens here, never in
the DomainTable, so xend keeps serving while a transfer runs. It asks the DomainTable
and Domain actors (downward, as DESIGN.md §2 wants); none of them ever asks it.

Save (facts §10.3): pause, ask the guest to suspend, let it run to act on that, wait
until the hypervisor reports it shut down for suspend, write the image (``savefile``),
and destroy the domain only once the image is complete and fsynced. Any failure before
that resumes the guest, so the domain keeps running, and leaves no file.

Restore: the image is checked whole before anything is created; the driver builds a
paused domain from the saved state; the DomainTable adopts it and its Domain actor
configures it as for any adopted domain (devices, console); then it is unpaused.

Migration is not here yet: ``op=migrate`` answers 501.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import pykka

from xend_actors import sxp
from xend_actors.domain import savefile
from xend_actors.domain.config import parse_domain_config
from xend_actors.errors import BadRequest, Conflict, NotFound, Timeout, XendError
from xend_actors.hypervisor.base import Driver, ShutdownReason
from xend_actors.store import RecordDir
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)

ASK_TIMEOUT = 30.0
CONFIGURE_TIMEOUT = 120.0  # attaching devices may run scripts
SUSPEND_TIMEOUT = 30.0  # as the original's wait for xend.domain.suspended
POLL_SECONDS = 0.05


class Transfer(TracedActor):
    def __init__(self, driver: Driver, table: pykka.ActorProxy, events: pykka.ActorProxy,
                 sessions: RecordDir) -> None:
        super().__init__()
        self._driver = driver
        self._table = table
        self._events = events
        self._sessions = sessions
        keys = sessions.keys()  # a RecordDir's, not a dict's
        self._next_id = 1 + max((int(k) for k in keys if k.isdigit()), default=0)

    def on_start(self) -> None:
        self._recover()

    def _recover(self) -> None:
        """Sessions left by a xend that stopped mid-transfer: a domain suspended for a save
        runs on (its image was never finished, or it would have been destroyed)."""
        for key, value in self._sessions.load_all().items():
            domid = sxp.child_value(value, "domain")
            if sxp.name(value) == "save" and str(domid).isdigit():
                self._resume(int(domid))
            log.warning("Transfer session %s was interrupted: %s", key, sxp.show(value))
            self._sessions.delete(key)

    def ping(self) -> str:
        """For the start-up barrier: the actor runs."""
        return "transfer"

    # --- save --------------------------------------------------------------------------

    def save(self, dom: str, file: str) -> None:
        """Save domain ``dom`` to ``file`` (an absolute path on this host), then destroy it."""
        self._require("save_state", "resume")
        path = Path(file)
        savefile.check_target(path)
        domain = _ask(self._table.find(dom, guest_only=True))
        info = _ask(self._table.info(dom))
        name, domid = str(sxp.child_value(info, "name")), int(sxp.child_value(info, "id"))
        if sxp.child(info, "config") is None:
            raise Conflict(f"cannot save domain {name}: xend has no configuration for it")
        session = self._session_id()
        ids = [name, str(domid)]

        def record(state: str) -> sxp.Value:
            value = ["save", ["id", session], ["state", state], ["domain", str(domid)],
                     ["file", str(path)]]
            self._sessions.write(session, value)
            self._events.publish("xend.domain.save", [*ids, state, value])
            return value

        was_paused = "p" in str(sxp.child_value(info, "state", ""))
        record("begin")
        log.info("Saving domain %s (id %s) to %s", name, domid, path)
        try:
            self._save(domain, domid, info, path, was_paused)
        except Exception as error:
            log.error("Saving domain %s to %s failed: %s", name, path, error)
            record("error")
            raise _failed("save", error) from None
        else:
            record("ok")
            log.info("Saved domain %s to %s", name, path)
        finally:
            self._sessions.delete(session)

    def _save(self, domain: pykka.ActorProxy, domid: int, info: sxp.Value, path: Path,
              was_paused: bool) -> None:
        paused = suspend_asked = written = False
        try:
            _ask(domain.pause())
            paused = True
            _ask(domain.shutdown(ShutdownReason.SUSPEND.value))
            suspend_asked = True
            # The request waits in the paused guest's ring; it must run to act on it,
            # and acts on it before anything typed since.
            _ask(domain.unpause())
            paused = False
            self._wait_suspended(domid)
            state = self._driver.save_state(domid)  # type: ignore[attr-defined]
            savefile.write(path, savefile.SaveImage(info, state))
            written = True
            _ask(self._table.destroy(str(domid), ShutdownReason.HALT.value))
        except BaseException:
            if written:
                path.unlink(missing_ok=True)
            if suspend_asked:
                self._resume(domid)
            if suspend_asked and was_paused:  # as it was before the save
                with contextlib.suppress(XendError, pykka.ActorDeadError, pykka.Timeout):
                    domain.pause().get(timeout=ASK_TIMEOUT)
            elif paused and not was_paused:
                with contextlib.suppress(XendError, pykka.ActorDeadError, pykka.Timeout):
                    domain.unpause().get(timeout=ASK_TIMEOUT)
            raise

    def _wait_suspended(self, domid: int) -> None:
        deadline = time.monotonic() + SUSPEND_TIMEOUT
        while True:
            try:
                hv = self._driver.domain(domid)
            except NotFound:
                raise XendError("Domain died") from None
            if hv.state.shutdown and hv.shutdown_reason is ShutdownReason.SUSPEND:
                return
            if hv.state.dead:
                raise XendError("Domain died")
            if time.monotonic() > deadline:
                raise Timeout(f"domain {domid} did not suspend within {SUSPEND_TIMEOUT:g} s")
            time.sleep(POLL_SECONDS)

    def _resume(self, domid: int) -> None:
        """Let a domain whose save failed run on, if it suspended (else nothing to undo)."""
        try:
            hv = self._driver.domain(domid)
            if hv.state.shutdown and hv.shutdown_reason is ShutdownReason.SUSPEND:
                self._driver.resume(domid)  # type: ignore[attr-defined]
        except XendError as error:
            log.error("Domain %s could not be resumed after a failed save: %s", domid, error)

    # --- restore -------------------------------------------------------------------------

    def restore(self, file: str) -> sxp.Value:
        """Restore the domain saved in ``file``; its info once it runs again."""
        self._require("restore_state")
        path = Path(file)
        image = savefile.read(path)  # all checks before anything is created
        vm = sxp.child_value(image.info, "config")
        if vm is None:
            raise BadRequest(f"{path} holds no (config (vm ...)) for the domain")
        config = parse_domain_config(vm)
        if config.name in _ask(self._table.names()):
            raise Conflict(f"Error restoring domain: vm name clash: {config.name}")
        session = self._session_id()
        self._sessions.write(session, ["restore", ["id", session], ["file", str(path)]])
        log.info("Restoring domain %s from %s", config.name, path)
        try:
            domid = self._driver.restore_state(  # type: ignore[attr-defined]
                config.name, config.memory_mb, image.payload)
            try:
                _ask(self._table.refresh())  # adopts it, as the original's GET did
                domain = _ask(self._table.find(str(domid)))
                _ask(domain.configure(config), CONFIGURE_TIMEOUT)
                _ask(domain.unpause())
            except BaseException:
                self._discard(domid)
                raise
            info = _ask(self._table.info(str(domid)))
        except Exception as error:
            log.error("Restoring from %s failed: %s", path, error)
            raise _failed("restore", error) from None
        finally:
            self._sessions.delete(session)
        log.info("Restored domain %s (id %s) from %s", config.name, domid, path)
        return info

    def _discard(self, domid: int) -> None:
        """Destroy a domain whose restore failed, through the table if it adopted it."""
        try:
            _ask(self._table.destroy(str(domid), ShutdownReason.HALT.value))
        except (XendError, pykka.ActorDeadError) as error:
            log.warning("Destroying half-restored domain %s via the table: %s", domid, error)
            with contextlib.suppress(XendError):
                self._driver.destroy(domid)

    # --- inside ------------------------------------------------------------------------------

    def _session_id(self) -> str:
        session, self._next_id = str(self._next_id), self._next_id + 1
        return session

    def _require(self, *calls: str) -> None:
        if not all(callable(getattr(self._driver, call, None)) for call in calls):
            raise XendError(f"save and restore are not available yet with the "
                            f"{type(self._driver).__name__} hypervisor driver", status=501)


def _ask(future: pykka.Future, timeout: float = ASK_TIMEOUT):  # type: ignore[no-untyped-def]
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise Timeout(f"an actor did not answer within {timeout:g} s") from None


def _failed(what: str, error: Exception) -> XendError:
    if isinstance(error, XendError):
        return XendError(f"{what} failed: {error.message}", status=error.status)
    return XendError(f"{what} failed: {error}")
