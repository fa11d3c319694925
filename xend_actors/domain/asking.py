"""Waiting for an actor's answer with a deadline: xend's ``Timeout`` (504), not pykka's."""

from __future__ import annotations

import pykka

from xend_actors.errors import Timeout

ASK_TIMEOUT = 30.0


def ask(future: pykka.Future, timeout: float = ASK_TIMEOUT):  # type: ignore[no-untyped-def]
    """The answer ``future`` brings within ``timeout`` seconds; what the actor raised."""
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise Timeout(f"an actor did not answer within {timeout:g} s") from None
