"""Operation arguments: declared, typed, all required (facts §4.2, the original's Args).

Parameters come merged from the query string, a form-urlencoded body or a multipart
body (a file part's content is its value). Each op declares its parameters in order
with a kind; fields it does not declare (``op`` among them) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from werkzeug import Request
from werkzeug.datastructures import MultiDict

from xend_actors import sxp
from xend_actors.errors import BadRequest


class Kind(Enum):
    """How a parameter's text becomes a value."""

    INT = "int"
    STR = "str"
    SXPR = "sxpr"
    BOOL = "bool"


@dataclass(frozen=True)
class Param:
    """A declared parameter; required unless it has a default (the original had none)."""

    name: str
    kind: Kind = Kind.STR
    default: object = None
    required: bool = True


def optional(name: str, kind: Kind = Kind.STR, default: object = None) -> Param:
    return Param(name, kind, default, required=False)


def _to_int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise BadRequest(f"invalid literal for int() in {name}: {text[:40]!r}: give a "
                         "whole number") from None


def _to_sxpr(name: str, text: str) -> sxp.Value:
    values = sxp.parse_all(text)
    if len(values) != 1:
        raise BadRequest(f"{name}: expected one s-expression, got {len(values)}")
    return values[0]


def _to_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "yes", "on", "true"):
        return True
    if word in ("0", "no", "off", "false"):
        return False
    raise BadRequest(f"invalid boolean in {name}: {text[:40]!r}: use yes or no (1/0, "
                     "on/off, true/false)")


_CONVERTERS: Mapping[Kind, Callable[[str, str], object]] = {
    Kind.INT: _to_int,
    Kind.STR: lambda _name, text: text,
    Kind.SXPR: _to_sxpr,
    Kind.BOOL: _to_bool,
}


def request_values(request: Request) -> MultiDict[str, str]:
    """Query, form and file fields of ``request`` in one table (read-only); files read
    as text."""
    environ = request.environ
    if environ.get("CONTENT_LENGTH") in (None, "", "0") and \
            "HTTP_TRANSFER_ENCODING" not in environ:
        return request.args  # no body (most GETs): no form to parse, nothing to merge
    merged: MultiDict[str, str] = MultiDict(request.args)
    merged.update(request.form)
    for name, upload in request.files.items(multi=True):
        data = upload.read()
        try:
            merged.add(name, data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{name}: uploaded file is not UTF-8 text") from None
    return merged


def decode(params: tuple[Param, ...], values: MultiDict[str, str]) -> dict[str, object]:
    """The declared parameters, converted; a missing or repeated one is a BadRequest."""
    decoded = {}
    for param in params:
        given = values.getlist(param.name)
        if not given and not param.required:
            decoded[param.name] = param.default
            continue
        if not given:
            raise BadRequest(f"Missing parameter: {param.name}")
        if len(given) > 1:
            raise BadRequest(f"Too many values for {param.name}")
        decoded[param.name] = _CONVERTERS[param.kind](param.name, given[0])
    return decoded
