"""A TransferSession actor runs one save, restore or migration out, then stops.

The Transfer actor (``transfer.py``) starts one for each transfer asked of it, so
transfers of different domains run side by side: a save need not wait for a slow
migration of another domain. What the sessions share is a ``Context`` (``context.py``).

A session checks what it is asked, decides by the driver's type which way the domain's
state moves (``drivers.movable``: pages or a stream), holds the domain's name so no
other transfer takes it (``Moving``), and runs the transfer: ``saving.py``,
``restoring.py``, or ``outgoing.py`` for a migration out. Each wait in it ends before
the request's ``Deadline`` does (``Context.inner``), so its caller learns which step
timed out and where the domain was left.

It is ``Supervised``: a bug stops it, its caller gets 503 at once, and the Transfer
actor is told what it left (``Leftovers``: its records in ``migrate/``, the names it
held) and puts that back as a restarted xend would: the source domain runs on, one
half made is destroyed, the names are free again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors import tally
from xend_actors.actors import Deadline, Supervised, ask
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.record import DomainInfo
from xend_actors.errors import BadRequest, Conflict, XendError
from xend_actors.trace import TracedActor
from xend_actors.transfer import outgoing, restoring, savefile, saving, xfr
from xend_actors.transfer.context import Context, Leftovers
from xend_actors.transfer.drivers import movable


class TransferSession(Supervised, TracedActor):
    """One save, restore or migration out; whoever started it stops it afterwards.
    ``failed`` tells its supervisor what it left, if a bug ends it."""

    # A transfer a stopping xend leaves half done is put right by the next start
    # (``Transfer._recover``); it must not hold the process up.
    use_daemon_thread = True
    recovery = "what it left was put back"

    def __init__(self, context: Context, failed: Callable[[Leftovers], object]) -> None:
        super().__init__()
        self._context = context
        self._failed = failed
        self._doing = "transfer session"

    def describe(self) -> str:
        return f"the {self._doing}"

    def tell_supervisor(self, error: Exception) -> None:
        self._failed(self._context.leftovers())

    def save(self, dom: str, file: str, deadline: Deadline | None = None) -> None:
        """Save domain ``dom`` to ``file`` (an absolute path on this host), then destroy it;
        each wait ends before ``deadline``."""
        self._begin(f"save of domain {dom}", deadline)
        driver = movable(self._context.driver, "save and restore")
        path = Path(file)
        savefile.check_target(path)
        domain, info = self._leaving(dom, "save")
        with self._context.holding(info.name, "saved"), _shown_as_now(domain), \
                tally.TRANSFERS.timed("save"):
            saving.run(self._context, driver, domain, info, path)

    def restore(self, file: str, deadline: Deadline | None = None) -> DomainInfo:
        """Restore the domain saved in ``file``; its info once it runs again."""
        self._begin(f"restore from {file}", deadline)
        driver = movable(self._context.driver, "save and restore")
        with tally.TRANSFERS.timed("restore"):
            return restoring.run(self._context, driver, Path(file))

    def migrate(self, dom: str, destination: str, live: bool = False, resource: int = 0,
                deadline: Deadline | None = None) -> str:
        """Move domain ``dom`` to the xend listening for relocation at ``destination``
        (``host`` or ``host:port``, port 8002 by default), streaming at most ``resource``
        Mbit/s (0: no limit); the new domain's URL once it runs there."""
        self._begin(f"migration of domain {dom}", deadline)
        driver = movable(self._context.driver, "migration")
        if resource < 0:
            raise BadRequest(f"resource must be 0 or a Mbit/s limit, got {resource}")
        try:
            where = xfr.parse_destination(destination)
        except xfr.XfrError as error:
            raise BadRequest(error.message) from None
        domain, info = self._leaving(dom, "migrate")
        with self._context.holding(info.name, "migrated"), _shown_as_now(domain), \
                tally.TRANSFERS.timed("migrate"):
            return outgoing.run(self._context, driver, domain, info, where, live, resource)

    def _leaving(self, dom: str, verb: str) -> tuple[DomainProxy, DomainInfo]:
        """The Domain actor and info of ``dom``, about to ``verb`` it away."""
        table = self._context.table
        domain = ask(table.find(dom, guest_only=True), "the domain table", self._context.inner())
        info = ask(table.info(dom), "the domain table", self._context.inner())
        if info.config is None:
            raise Conflict(f"cannot {verb} domain {info.name}: xend has no configuration "
                           "for it")
        return domain, info

    def _begin(self, doing: str, deadline: Deadline | None) -> None:
        self._doing = doing
        self._context = self._context.for_session(deadline)


@contextlib.contextmanager
def _shown_as_now(domain: DomainProxy) -> Iterator[None]:
    """A transfer that fails puts its domain back behind its Domain actor (resumed by
    the driver): the table shows it as the hypervisor has it before the error is
    answered, so the client's next read finds it running, not suspended."""
    try:
        yield
    except XendError:
        with contextlib.suppress(XendError, pykka.ActorDeadError):
            shown = ask(domain.reread(), "the domain")
            if shown is not None:
                ask(shown, "the domain table")
        raise


class TransferSessionProxy(ActorMemberMixin, pykka.ActorProxy[TransferSession]):
    save = proxy_method(TransferSession.save)
    restore = proxy_method(TransferSession.restore)
    migrate = proxy_method(TransferSession.migrate)
