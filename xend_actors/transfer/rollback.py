"""Stopping a domain for a transfer, and putting things back when the transfer fails.

A save or a migration of a domain whose state is bytes (sim) suspends it the Xen way
(facts §10.3): pause, ask the guest to suspend, let it run to act on the request, and
wait until the hypervisor reports it shut down for suspend. When the transfer fails, a
domain it suspended is resumed and one it paused is unpaused, so it runs on as before
(the original had to destroy it). A stream driver's domain (qemu) needs no request: the
hypervisor stops it for the stream, and ``resume`` runs it again. A domain half made at
the receiving end of a failed transfer is destroyed (``discard``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pykka

from xend_actors.actors import ASK_TIMEOUT, Deadline, ask
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.table import DomainTableProxy
from xend_actors.errors import Conflict, NotFound, Timeout, XendError
from xend_actors.hypervisor.base import Driver, ShutdownReason, StreamState

log = logging.getLogger(__name__)

SUSPEND_TIMEOUT = 30.0  # as the original's wait for xend.domain.suspended
POLL_SECONDS = 0.05


class Suspension:
    """Suspending domain ``domid`` (its Domain actor ``domain``) for a transfer, and
    undoing that when the transfer fails."""

    def __init__(self, driver: Driver, domain: DomainProxy, domid: int,
                 was_paused: bool) -> None:
        self._driver = driver
        self._domain = domain
        self._domid = domid
        self._was_paused = was_paused
        self._paused = self._suspend_asked = False

    def suspend(self, deadline: Deadline) -> None:
        """Suspended within ``deadline`` (the transfer's wait for it), else Timeout."""
        what = f"domain {self._domid}"
        ask(self._domain.pause(), what, deadline)
        self._paused = True
        ask(self._domain.shutdown(ShutdownReason.SUSPEND), what, deadline)
        self._suspend_asked = True
        # The request waits in the paused guest's ring; it must run to act on it, and
        # acts on it before anything typed since.
        ask(self._domain.unpause(), what, deadline)
        self._paused = False
        wait_suspended(self._driver, self._domid, deadline)

    def undo(self) -> None:
        """The domain as it was before ``suspend``, as far as it got."""
        if self._suspend_asked:
            resume(self._driver, self._domid)
        if self._suspend_asked and self._was_paused:
            _quietly(self._domain.pause())
        elif self._paused and not self._was_paused:
            _quietly(self._domain.unpause())


def wait_suspended(driver: Driver, domid: int, deadline: Deadline) -> None:
    """Returns once the hypervisor reports ``domid`` shut down for suspend; Timeout once
    ``deadline`` passed; Conflict (409) if it died, rebooted or crashed meanwhile: the
    domain's own doing, not the hypervisor failing (its restart rules apply to it as to
    any other exit)."""
    while True:
        try:
            hv = driver.domain(domid)
        except NotFound:
            raise Conflict("Domain died") from None
        if hv.state.shutdown and hv.shutdown_reason is ShutdownReason.SUSPEND:
            return
        if hv.state.dead:
            raise Conflict("Domain died")
        if deadline.remaining() <= 0:
            raise Timeout(f"domain {domid} did not suspend within {deadline.seconds:.3g} s")
        time.sleep(POLL_SECONDS)


def resume(driver: Driver, domid: int, was_paused: bool = False) -> None:
    """Let a domain whose transfer failed run on, if it suspended (else nothing to undo);
    a stream driver's, if it is stopped and was not paused before."""
    streams = isinstance(driver, StreamState)
    try:
        hv = driver.domain(domid)
        suspended = hv.state.shutdown and hv.shutdown_reason is ShutdownReason.SUSPEND
        if suspended or (streams and hv.state.paused and not was_paused):
            driver.resume(domid)
    except XendError as error:
        log.error("Domain %s could not be resumed after a failed transfer: %s", domid, error)


def destroy(table: DomainTableProxy, domid: int) -> None:
    """Destroy domain ``domid`` for good (it was saved, or it runs elsewhere now). Its
    wait is its own, not the request's: a destroy goes on past a wait cut short, and a
    transfer waits for the step it cannot undo."""
    deadline = Deadline.after(ASK_TIMEOUT)
    domain = ask(table.find(str(domid), guest_only=True), "the domain table", deadline)
    ask(domain.destroy(ShutdownReason.HALT, deadline.inner()), f"domain {domid}", deadline)


def left(driver: Driver, domid: int) -> str:
    """Where a failed transfer left domain ``domid``, as its 504 says it."""
    try:
        state = driver.domain(domid).state
    except NotFound:
        return f"domain {domid} is gone"
    except (XendError, OSError) as error:
        return f"domain {domid} is in a state the hypervisor did not say ({error})"
    if state.dead:
        return f"domain {domid} is stopped"
    return f"domain {domid} is {'paused' if state.paused else 'running'}"


def discard(driver: Driver, table: DomainTableProxy, domid: int) -> None:
    """Destroy a domain a failed transfer made (or handed over), through the table if it
    adopted it, else through the driver."""
    try:
        destroy(table, domid)
    except (XendError, pykka.ActorDeadError) as error:
        log.warning("Destroying domain %s via the table failed: %s", domid, error)
        with contextlib.suppress(XendError):
            driver.destroy(domid)


def handed_over(driver: Driver, table: DomainTableProxy, domain: DomainProxy,
                domid: int) -> bool:
    """Destroy domain ``domid``, which runs on another host now and is out of the
    table's listing (``DomainTable.handed_over``), through its Domain actor ``domain``,
    else through the driver; whether it is gone."""
    deadline = Deadline.after(ASK_TIMEOUT)
    try:
        ask(domain.destroy(ShutdownReason.HALT, deadline.inner()), f"domain {domid}", deadline)
        return True
    except (XendError, pykka.ActorDeadError) as error:
        log.warning("Destroying domain %s, migrated away, through its actor failed: %s",
                    domid, error)
    try:
        driver.destroy(domid)
    except NotFound:
        pass
    except XendError as error:
        log.error("Domain %s, migrated away, could not be destroyed: %s", domid, error)
        return False
    with contextlib.suppress(pykka.ActorDeadError):
        table.gone(domid)
    return True


@contextlib.contextmanager
def discarded_on_failure(driver: Driver, table: DomainTableProxy, domid: int) -> Iterator[None]:
    """Domain ``domid``, made for a transfer, is destroyed if what runs inside fails."""
    try:
        yield
    except BaseException:
        discard(driver, table, domid)
        raise


def _quietly(future: pykka.Future[Any]) -> None:
    with contextlib.suppress(XendError, pykka.ActorDeadError, pykka.Timeout):
        ask(future)
