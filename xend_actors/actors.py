"""Reaching an actor, and an actor's end: one deadline per request, the one ask helper,
and the supervision every long-lived actor gets.

A request has one ``Deadline``; each inner ask gets ``deadline.inner()``, which ends a
margin before its outer one, so an inner wait always gives up first and the outer
caller learns why (a ``Timeout``, 504) instead of timing out blind. Asks made outside
any request (start-up, the reaper) use ``ASK_TIMEOUT``.

``ask`` turns pykka's failures into xend's: ``pykka.Timeout`` into ``Timeout`` (504),
and an actor that stopped before it answered (``pykka.ActorDeadError``) into
``ActorGone`` (503), never a hang.

``Supervised`` is Erlang's "let it crash": a handler that raises anything but a
``XendError`` or an ``OSError`` (a bug: the actor's state can no longer be trusted)
stops its actor at once; its caller and every caller still waiting get ``ActorFailed``
(503) now rather than at their timeouts, and the actor's ``on_failure`` tells its
parent, which starts a new one from the store.

``proxy_of`` makes an actor's typed proxy. pykka looks through every attribute of the
actor each time it makes a proxy (0.3 ms, and a dict of some 40 entries kept by each
proxy: one per domain); what it finds is the actor's class's, so it is looked up once
per class and shared (``_introspect_once``).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

import pykka
import pykka._proxy

from xend_actors import tally
from xend_actors.errors import Timeout, XendError

log = logging.getLogger(__name__)

ASK_TIMEOUT = 30.0  # an ask outside any request: start-up, the reaper, a transfer's steps
MARGIN = 0.5  # seconds an inner wait leaves its outer one to answer in ...
MARGIN_SHARE = 0.1  # ... at most this share of a short budget

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered by (``time.monotonic()``), and its budget then."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def inner(self) -> Deadline:
        """The deadline of an ask made within this one: it ends a margin earlier."""
        margin = min(MARGIN, self.seconds * MARGIN_SHARE)
        return Deadline(self.at - margin, max(0.0, self.remaining() - margin))


def within(deadline: Deadline | None, cap: float) -> Deadline:
    """A wait of at most ``cap`` seconds that ends before ``deadline`` (if any) does while
    its request waits. Past it, the request was answered (504, saying the work goes on:
    a slow create, a save) and each wait has its ``cap`` again."""
    inner = None if deadline is None else deadline.inner()
    if inner is None or inner.remaining() <= 0:
        return Deadline.after(cap)
    return inner if inner.remaining() <= cap else Deadline.after(cap)


class ActorGone(XendError):
    """The actor stopped before it answered (it finished its work, or failed)."""

    status = 503


class ActorFailed(XendError):
    """The actor failed while the request waited on it; a new one took its place."""

    status = 503


def ask(future: pykka.Future[T], what: str = "an actor",
        timeout: float | Deadline = ASK_TIMEOUT) -> T:
    """The answer ``future`` brings within ``timeout`` (seconds, or what is left of a
    deadline); what the actor raised."""
    seconds = timeout.remaining() if isinstance(timeout, Deadline) else timeout
    budget = timeout.seconds if isinstance(timeout, Deadline) else timeout
    start = time.monotonic()
    try:
        return future.get(timeout=seconds)
    except pykka.Timeout:
        raise Timeout(f"{what} did not answer within {budget:.3g} s") from None
    except pykka.ActorDeadError:
        raise ActorGone(f"{what} stopped before it answered; try again") from None
    finally:
        tally.ASKS.observe((_caller(),), time.monotonic() - start)


def _caller() -> str:
    """The function that asked (``Class.method``): the label of its ask's latency; the
    web's ``answer`` passes its own caller's."""
    code = sys._getframe(2).f_code
    if code.co_name == "answer":
        code = sys._getframe(3).f_code
    return code.co_qualname


def is_bug(error: BaseException) -> bool:
    """Whether ``error`` is a bug (the state it leaves cannot be trusted), not the world
    failing (bad input, a full disk, a peer or an actor gone): what crashes a
    ``Supervised`` actor."""
    return isinstance(error, Exception) and not isinstance(
        error, (XendError, OSError, pykka.ActorDeadError))


class Supervised(pykka.ThreadingActor):
    """An actor that crashes on a bug (see the module's docstring): pykka's
    ``on_failure`` calls ``tell_supervisor``, its subclass's way to tell the parent;
    ``describe`` names it in its callers' 503."""

    _crashed = False
    _told = False
    recovery = "was restarted"  # what its parent does once it failed, for its callers

    def describe(self) -> str:
        return str(self.actor_ref)

    # pykka gives a proxy call's exception to its caller and keeps the actor running on
    # whatever state the exception left; its only hook is here.
    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        except Exception as error:
            if not is_bug(error):
                raise  # the world failed, not the actor
            failure = ActorFailed(f"{self.describe()} failed ({type(error).__name__}: "
                                  f"{error}) and {self.recovery}; try again")
            self._crash(error, failure)
            raise failure from error

    def _crash(self, error: Exception, failure: ActorFailed) -> None:
        if self._crashed:
            return
        self._crashed = True
        log.error("%s failed; its %s", self.describe(), "parent puts it right", exc_info=error)
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        # The callers still waiting: answered now, not at their timeouts. Only this
        # thread takes from the inbox; pykka's teardown answers the rest (stop requests,
        # and what comes in after).
        others = []
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            if isinstance(envelope.message, pykka.messages.ProxyCall) and envelope.reply_to:
                envelope.reply_to.set_exception(exc_info=(ActorFailed, failure, None))
            else:
                others.append(envelope)
        for envelope in others:
            self.actor_inbox.put(envelope)
        try:
            self.on_failure(type(error), error, error.__traceback__)
        except Exception:
            log.exception("%s: on_failure failed", self.describe())

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        """pykka's hook, called from ``_crash`` or by pykka for a told message that
        raised: the parent is told once."""
        if not self._told and isinstance(exception_value, Exception):
            self._told = True
            self.tell_supervisor(exception_value)

    def tell_supervisor(self, error: Exception) -> None:
        """Tell the parent this actor died (the subclass's; by default nobody is told)."""


P = TypeVar("P")


# A private pykka function (pinned <5 in setup.py); should a release drop it, proxies are
# made as pykka makes them, only slower.
_introspect = getattr(pykka._proxy, "introspect_attrs", None)
_KNOWN: dict[type, dict[Any, Any]] = {}


def _introspect_once(*, root: Any, proxy: pykka.ActorProxy[Any]) -> dict[Any, Any]:
    """pykka's ``introspect_attrs``, once for each actor class: every actor of a class
    has the same public attributes (ours keep their own state private). Asked again by a
    proxy that met a name it did not know, it looks afresh, as pykka would."""
    known = _KNOWN.get(type(root))
    if known is None or "_known_attrs" in vars(proxy):
        assert _introspect is not None
        known = _KNOWN[type(root)] = _introspect(root=root, proxy=proxy)
    return known


if _introspect is not None:
    pykka._proxy.introspect_attrs = _introspect_once


def proxy_of(ref: pykka.ActorRef[Any], kind: type[P]) -> P:
    """``ref``'s proxy, typed as ``kind``: a ``pykka.ActorProxy[A]`` subclass that names the
    actor's methods with ``pykka.typing.proxy_method`` (as Mopidy's ``CoreProxy`` does), so
    mypy checks every call made through it."""
    return cast(P, ref.proxy())
