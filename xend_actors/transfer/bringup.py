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

from xend_actors.actors import ask
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
def intended(table: DomainTableProxy, config: DomainConfig) -> Iterator[None]:
    """``config.name`` held and recorded as intended while the domain is made and brought
    up inside (Conflict if the name is taken, here or in the hypervisor); the intent is
    dropped when the domain's record is written, or here if what runs inside fails."""
    ask(table.intend(config))
    try:
        yield
    except BaseException:
        with contextlib.suppress(XendError):
            ask(table.unintend(config.name))
        raise


def bring_up(driver: Driver, table: DomainTableProxy, domid: int, config: DomainConfig,
             load: Callable[[], None] = _nothing) -> DomainInfo:
    """Domain ``domid``, just made by ``driver``, adopted as ``config.name``, configured,
    ``load``-ed (its state, or a migration's commit) and unpaused; its info once it runs.
    On any failure before it runs it is destroyed (``rollback.discard``)."""
    with rollback.discarded_on_failure(driver, table, domid):
        domain = ask(table.take_in(domid, config.name))
        ask(domain.configure(config), timeout=CONFIGURE_TIMEOUT)
        load()
        ask(domain.unpause())
    return ask(table.info(str(domid)))
