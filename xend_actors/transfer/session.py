"""A TransferSession actor runs one save, restore or migration out, then stops.

The Transfer actor (``transfer.py``) starts one for each transfer asked of it, so
transfers of different domains run side by side: a save need not wait for a slow
migration of another domain. What the sessions share is a ``Context`` (``context.py``).

A session checks what it is asked, decides by the driver's type which way the domain's
state moves (``drivers.movable``: pages or a stream), holds the domain's name so no
other transfer takes it (``Moving``), and runs the transfer: ``saving.py``,
``restoring.py``, or ``outgoing.py`` for a migration out.
"""

from __future__ import annotations

from pathlib import Path

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import ask
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.record import DomainInfo
from xend_actors.errors import BadRequest, Conflict
from xend_actors.trace import TracedActor
from xend_actors.transfer import outgoing, restoring, savefile, saving, xfr
from xend_actors.transfer.context import Context
from xend_actors.transfer.drivers import movable


class TransferSession(TracedActor):
    """One save, restore or migration out; whoever started it stops it afterwards."""

    # A transfer a stopping xend leaves half done is put right by the next start
    # (``Transfer._recover``); it must not hold the process up.
    use_daemon_thread = True

    def __init__(self, context: Context) -> None:
        super().__init__()
        self._context = context

    def save(self, dom: str, file: str) -> None:
        """Save domain ``dom`` to ``file`` (an absolute path on this host), then destroy it."""
        driver = movable(self._context.driver, "save and restore")
        path = Path(file)
        savefile.check_target(path)
        domain, info = self._leaving(dom, "save")
        with self._context.moving.held(info.name, "saved"):
            saving.run(self._context, driver, domain, info, path)

    def restore(self, file: str) -> DomainInfo:
        """Restore the domain saved in ``file``; its info once it runs again."""
        driver = movable(self._context.driver, "save and restore")
        return restoring.run(self._context, driver, Path(file))

    def migrate(self, dom: str, destination: str, live: bool = False, resource: int = 0) -> str:
        """Move domain ``dom`` to the xend listening for relocation at ``destination``
        (``host`` or ``host:port``, port 8002 by default), streaming at most ``resource``
        Mbit/s (0: no limit); the new domain's URL once it runs there."""
        driver = movable(self._context.driver, "migration")
        if resource < 0:
            raise BadRequest(f"resource must be 0 or a Mbit/s limit, got {resource}")
        try:
            where = xfr.parse_destination(destination)
        except xfr.XfrError as error:
            raise BadRequest(error.message) from None
        domain, info = self._leaving(dom, "migrate")
        with self._context.moving.held(info.name, "migrated"):
            return outgoing.run(self._context, driver, domain, info, where, live, resource)

    def _leaving(self, dom: str, verb: str) -> tuple[DomainProxy, DomainInfo]:
        """The Domain actor and info of ``dom``, about to ``verb`` it away."""
        domain = ask(self._context.table.find(dom, guest_only=True))
        info = ask(self._context.table.info(dom))
        if info.config is None:
            raise Conflict(f"cannot {verb} domain {info.name}: xend has no configuration "
                           "for it")
        return domain, info


class TransferSessionProxy(ActorMemberMixin, pykka.ActorProxy[TransferSession]):
    save = proxy_method(TransferSession.save)
    restore = proxy_method(TransferSession.restore)
    migrate = proxy_method(TransferSession.migrate)
