"""Reaching an actor: its answer within a deadline, or xend's ``Timeout`` (504), never
pykka's, so a stuck actor is a clear error instead of a hang; and its typed proxy."""

from __future__ import annotations

from typing import Any, TypeVar, cast

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


P = TypeVar("P")


def proxy_of(ref: pykka.ActorRef[Any], kind: type[P]) -> P:
    """``ref``'s proxy, typed as ``kind``: a ``pykka.ActorProxy[A]`` subclass that names the
    actor's methods with ``pykka.typing.proxy_method`` (as Mopidy's ``CoreProxy`` does), so
    mypy checks every call made through it."""
    return cast(P, ref.proxy())
