"""The parts of xend a web handler may ask: actor proxies and the config.

Handlers never touch another actor's state; they ask these proxies, always with
a timeout, so a stuck actor becomes a clear 504 instead of a hung request.
"""

from __future__ import annotations

from dataclasses import dataclass

import pykka

from xend_actors.config import XendConfig
from xend_actors.errors import Timeout

ASK_TIMEOUT = 10.0
BUILD_TIMEOUT = 120.0  # building a domain may start a process and wait for it
TRANSFER_TIMEOUT = 600.0  # a save or restore writes or reads a whole image


@dataclass(frozen=True)
class Services:
    config: XendConfig
    events: pykka.ActorProxy
    hypervisor: pykka.ActorProxy
    table: pykka.ActorProxy
    notifier: pykka.ActorProxy
    consoles: pykka.ActorProxy
    vnets: pykka.ActorProxy
    transfer: pykka.ActorProxy | None = None  # save and restore (domain/transfer.py)


def answer(future: pykka.Future, what: str, timeout: float = ASK_TIMEOUT):  # type: ignore[no-untyped-def]
    """The future's value, or a ``Timeout`` naming ``what`` did not answer."""
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise Timeout(f"{what} did not answer within {timeout:g} s") from None
