"""Resources: what one kind of URL shows on GET and which ops it runs on POST.

A resource declares its ops with the ``@op`` decorator, the way click declares
commands: the op's name, its typed parameters and its success status sit on the
handler itself, so the table of what xend accepts is the code that runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from werkzeug import Request, Response

from xend_actors import sxp
from xend_actors.web.forms import Param


class Shown(Protocol):
    """A typed answer (a domain's info, a console's): SXP only when it leaves xend."""

    def sxpr(self) -> sxp.Value: ...


Answer = sxp.Value | Shown
"""What a handler answers: SXP, a typed value, or a list of them."""


def wire(value: Answer) -> sxp.Value:
    """The SXP a program is sent for ``value``: typed answers are turned into SXP here, at
    the edge, and nowhere before."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        # A handler's list holds one kind of thing: its first says whether it is SXP
        # already (names: passed on as it is) or typed (infos: each made SXP).
        if value and not isinstance(value[0], str | list):
            return [item.sxpr() for item in value]
        return value
    return value.sxpr()


@dataclass(frozen=True)
class Reply:
    """A handler's answer when it needs more than a 200 with an SXP value."""

    value: Answer
    status: int = 200
    location: str | None = None
    text: bool = False  # raw text/plain for programs too (dmesg, the log)
    shown: str | None = None  # ``value``'s SXP already shown (kept by its owner): sent as is


@dataclass(frozen=True)
class Op:
    name: str
    params: tuple[Param, ...]
    handler: Callable[..., Any]
    status: int = 200
    on_get: bool = False  # the few ops the original also runs on GET
    reads: bool = False  # changes nothing: a viewer may run it by GET


def op(*names: str, params: tuple[Param, ...] = (), status: int = 200,
       on_get: bool = False, reads: bool = False) -> Callable:
    """Declare the decorated method as the handler of POST ``op=name`` for each name."""

    def mark(handler: Callable) -> Callable:
        # A mark on the function itself, read when the resource class is made.
        handler.xend_ops = [Op(name, params, handler, status, on_get,  # type: ignore[attr-defined]
                               reads) for name in names]
        return handler

    return mark


class Resource:
    """Base of every resource: GET shows ``get()``; POST runs a declared op."""

    children: ClassVar[tuple[str, ...]] = ()
    ops: ClassVar[dict[str, Op]] = {}
    admin_only: ClassVar[bool] = False  # even its GET is for admins (tokens, console input)
    public: ClassVar[bool] = False  # served to clients not yet known (the login page)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ops = {
            declared.name: declared
            for klass in reversed(cls.__mro__)
            for marked in vars(klass).values()
            for declared in getattr(marked, "xend_ops", ())
        }

    # Each resource names the URL's parts it takes (``dom``, ``port``); any is fine here.
    def get(self, request: Request, *args: Any, **url_args: Any) -> Reply | Answer | Response:
        return ["ls", *self.children]
