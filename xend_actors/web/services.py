"""The parts of xend a web handler may ask: actor proxies, the config, the gate's keys.

Handlers never touch another actor's state; they ask these proxies within the
request's one deadline (``deadline``: from the config, by the kind of operation), and
pass ``deadline.inner()`` to what the actor asks in turn, so a stuck actor becomes a
clear 504 instead of a hung request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import pykka

from xend_actors.actors import Deadline, ask
from xend_actors.config import XendConfig
from xend_actors.console.hub import ConsolesProxy
from xend_actors.device.vnets import VnetsProxy
from xend_actors.domain.samples import Samples
from xend_actors.domain.table import DomainTableProxy
from xend_actors.domain.view import TableView
from xend_actors.events.bus import EventBusProxy
from xend_actors.events.notify import NotifierProxy
from xend_actors.hypervisor.actor import HypervisorProxy
from xend_actors.pool.opening import Pool
from xend_actors.pool.view import PoolReader
from xend_actors.transfer.transfer import TransferProxy
from xend_actors.web.gate import Keys

ASK_TIMEOUT = 10.0  # a request's deadline where no config is at hand (consoles' waits)

T = TypeVar("T")


class OpKind(Enum):
    """What a request does, for its deadline: the config's ``<value>`` option."""

    REQUEST = "request_timeout"  # a question or a quick change
    DESTROY = "destroy_timeout"
    BUILD = "build_timeout"  # create, hot-plug
    TRANSFER = "transfer_timeout"  # save, restore, migrate


@dataclass(frozen=True)
class Services:
    config: XendConfig
    events: EventBusProxy
    hypervisor: HypervisorProxy
    table: DomainTableProxy
    notifier: NotifierProxy
    consoles: ConsolesProxy
    vnets: VnetsProxy
    view: TableView  # the domains as the table last published them: read, never asked
    transfer: TransferProxy | None = None  # save and restore (transfer/transfer.py)
    keys: Keys | None = None  # tokens, sessions, the failure limiter: the gate's
    samples: Samples | None = None  # the domains' samples: read, never asked
    pool: Pool | None = None  # the pool this xend is a member of (pool/opening.py)
    pool_view: PoolReader | None = None  # the pool's view, read from its etcd; None: no pool

    def deadline(self, kind: OpKind = OpKind.REQUEST) -> Deadline:
        """A new request's deadline, from now."""
        seconds: float = getattr(self.config, kind.value)
        return Deadline.after(seconds)


def answer(future: pykka.Future[T], what: str,
           timeout: float | Deadline = ASK_TIMEOUT) -> T:
    """The future's value, or a ``Timeout`` naming ``what`` did not answer."""
    return ask(future, what, timeout)
