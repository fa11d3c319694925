"""The parts of xend a web handler may ask: actor proxies, the config, the gate's keys.

Handlers never touch another actor's state; they ask these proxies, always with
a timeout, so a stuck actor becomes a clear 504 instead of a hung request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import pykka

from xend_actors.actors import ask
from xend_actors.config import XendConfig
from xend_actors.console.hub import ConsolesProxy
from xend_actors.device.vnets import VnetsProxy
from xend_actors.domain.table import DomainTableProxy
from xend_actors.events.bus import EventBusProxy
from xend_actors.events.notify import NotifierProxy
from xend_actors.hypervisor.actor import HypervisorProxy
from xend_actors.transfer.transfer import TransferProxy
from xend_actors.web.gate import Keys

ASK_TIMEOUT = 10.0
BUILD_TIMEOUT = 120.0  # building a domain may start a process and wait for it
TRANSFER_TIMEOUT = 600.0  # a save or restore writes or reads a whole image

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    config: XendConfig
    events: EventBusProxy
    hypervisor: HypervisorProxy
    table: DomainTableProxy
    notifier: NotifierProxy
    consoles: ConsolesProxy
    vnets: VnetsProxy
    transfer: TransferProxy | None = None  # save and restore (transfer/transfer.py)
    keys: Keys | None = None  # tokens, sessions, the failure limiter: the gate's


def answer(future: pykka.Future[T], what: str, timeout: float = ASK_TIMEOUT) -> T:
    """The future's value, or a ``Timeout`` naming ``what`` did not answer."""
    return ask(future, what, timeout)
