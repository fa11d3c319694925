"""Who is asking, and in which format it is answered: SXP, JSON or HTML pages.

SXP unless the client asks for another: the original xm and XendClient (no ``Accept``,
or ``application/sxp``) and curl (``*/*``) all get SXP, the original's replies to the
byte. ``application/json`` gets JSON (``sxp_json.py``). HTML goes only to a browser: a
request with a ``User-Agent`` (the original's rule, facts §4.1: a program without one
always got SXP) whose ``Accept`` names ``text/html``. When ``Accept`` names more than
one, its quality values choose; on a tie SXP comes first, then JSON, then HTML.

Only a request negotiated as HTML is a browser's: the browser-only rules (pages, the
CSRF token of its forms, ``browser.py``) apply to it and to no other.
"""

from __future__ import annotations

import functools
from enum import Enum
from wsgiref.types import WSGIEnvironment

from werkzeug import Response
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from xend_actors import sxp
from xend_actors.web import sxp_json

SXP_MIMETYPE = "application/sxp"
JSON_MIMETYPE = "application/json"
HTML_MIMETYPE = "text/html"
ACCEPTS_KEPT = 64  # distinct Accept headers whose choice is remembered
KEPT_ACCEPT = 512  # characters of an Accept header whose choice is remembered


class Format(Enum):
    """The format of a reply."""

    SXP = SXP_MIMETYPE
    JSON = JSON_MIMETYPE
    HTML = HTML_MIMETYPE


# Python 3.11 looks an enum member up through a descriptor, some 0.2 µs each time: the
# paths every request takes compare with these instead.
SXP, JSON, HTML = Format.SXP, Format.JSON, Format.HTML


def wanted(environ: WSGIEnvironment) -> Format:
    """The format the request asks for, from its headers as they are (no werkzeug view)."""
    accept = environ.get("HTTP_ACCEPT")
    if not accept or accept == SXP_MIMETYPE:  # xm, XendClient: nothing to parse
        return SXP
    lowered = accept.lower()
    html = HTML_MIMETYPE in lowered and bool(environ.get("HTTP_USER_AGENT"))
    if not html and "json" not in lowered:  # curl's */*, an event stream's
        return SXP
    if len(accept) > KEPT_ACCEPT:
        return _chosen(accept, html)
    return _kept(accept, html)


def wants_html(environ: WSGIEnvironment) -> bool:
    """Whether the request is a browser's (the pages and the browser-only rules)."""
    return wanted(environ) is HTML


def error_response(message: str, wants: Format) -> Response:
    """An error's reply without its status (the caller's): ``{"error": MESSAGE}`` to a
    client asking for JSON, else ``(xend.err MESSAGE)``."""
    if wants is JSON:
        return Response(sxp_json.error(message), content_type=JSON_MIMETYPE)
    return Response(sxp.show(["xend.err", message]), mimetype=SXP_MIMETYPE)


def _chosen(accept: str, html: bool) -> Format:
    offers = [SXP_MIMETYPE, JSON_MIMETYPE, *([HTML_MIMETYPE] if html else [])]
    return Format(parse_accept_header(accept, MIMEAccept).best_match(offers, SXP_MIMETYPE))


# A browser sends the same few headers again and again: each is parsed once.
_kept = functools.lru_cache(maxsize=ACCEPTS_KEPT)(_chosen)
