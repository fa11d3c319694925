"""Bringing up a domain a transfer made: the one way a restore (from pages or from a
stream) and a migration in both do it.

The driver has made the domain paused (from the saved state, or as a machine waiting
for its stream); the DomainTable adopts it under its own name, its Domain actor
configures it as for any adopted domain (devices, console), its state is loaded if it
comes only now, and it is unpaused. Until it runs, any failure destroys it again.

Before the driver makes it, the table records the intent (``intended``), as for a
create: a xend killed before the domain's record is written destroys it on its next
start, rather than adopting it half made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from xend_actors.actors import ASK_TIMEOUT, Deadline, ask
from xend_actors.domain.config import DomainConfig
from xend_actors.domain.record import DomainInfo
from xend_actors.domain.table import DomainTableProxy
from xend_actors.errors import XendError
from xend_actors.hypervisor.base import Driver
from xend_actors.transfer import rollback

CONFIGURE_TIMEOUT = 120.0  # attaching devices may run scripts

def _nothing() -> None:
    pass


@contextlib.contextmanager
def intended(table: DomainTableProxy, config: DomainConfig,
             deadline: Deadline, peer: str | None = None) -> Iterator[None]:
    """``config.name`` held and recorded as intended while the domain is made and brought
    up inside (Conflict if the name is taken, here, in the hypervisor or by another
    member of the pool than ``peer``, the xend it migrates in from); the intent is
    dropped when the domain's record is written, or here if what runs inside fails."""
    ask(table.intend(config, peer), "the domain table", deadline)
    try:
        yield
    except BaseException:
        with contextlib.suppress(XendError):
            ask(table.unintend(config.name))
        raise


def bring_up(driver: Driver, table: DomainTableProxy, domid: int, config: DomainConfig,
             inner: Callable[[float], Deadline],
             load: Callable[[], None] = _nothing) -> None:
    """Domain ``domid``, just made by ``driver``, adopted as ``config.name``, configured,
    ``load``-ed (its state, or a migration's commit) and unpaused; returns once it runs.
    A step that takes at most ``cap`` s waits until ``inner(cap)``: the transfer's
    deadline for it (``Context.inner``). On any failure before it runs it is destroyed
    (``rollback.discard``)."""
    what = f"domain {domid}"
    with rollback.discarded_on_failure(driver, table, domid):
        domain = ask(table.take_in(domid, config.name), "the domain table", inner(ASK_TIMEOUT))
        configuring = inner(CONFIGURE_TIMEOUT)
        ask(domain.configure(config, configuring.inner()), what, configuring)
        load()
        ask(domain.unpause(), what, inner(ASK_TIMEOUT))


def running(table: DomainTableProxy, domid: int, deadline: Deadline) -> DomainInfo:
    """The info of domain ``domid``, brought up: a restore's answer."""
    return ask(table.info(str(domid)), "the domain table", deadline)
