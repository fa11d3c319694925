"""Asking an actor: its answer within a deadline, or xend's ``Timeout`` (504), never
pykka's, so a stuck actor is a clear error instead of a hang."""

from __future__ import annotations

from typing import TypeVar

import pykka

from xend_actors.errors import Timeout

ASK_TIMEOUT = 30.0

T = TypeVar("T")


def ask(future: pykka.Future[T], what: str = "an actor", timeout: float = ASK_TIMEOUT) -> T:
    """The answer ``future`` brings within ``timeout`` seconds; what the actor raised."""
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise Timeout(f"{what} did not answer within {timeout:g} s") from None
