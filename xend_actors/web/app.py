"""The WSGI application: URL routing, op dispatch, errors and replies.

Routing is a werkzeug ``Map`` from paths to resources; every path takes an optional
trailing slash, as the original's did. A handled ``XendError`` becomes its status
with the message as reason phrase and an ``(xend.err '...')`` body, so clients that
follow the original client rule (facts §4.3) still read the message. Bodies and
forms have size limits; nothing unbounded is parsed. Requests negotiated as a browser
go to ``browser.BrowserSite`` (pages, guarded forms); a client asking for JSON gets the
SXP reply mapped by ``sxp_json`` (``negotiate.py`` says which). No op runs for a
request from another site, whoever sends it (``csrf.cross_site_refusal``). A request whose body's
length is ambiguous (``Content-Length`` with ``Transfer-Encoding``, RFC 9112 §6.1: the
way requests are smuggled past a proxy) is refused before anything reads it
(``framing_refusal``). A handled error is one log line; a traceback means a bug.

Authorization is here, once for both ways in: the gate (``gate.py``) has said who the
client is; ``authorize`` says whether that principal may have what it asks, and every
op run is written to the audit trail (``audit.py``).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from werkzeug import Request, Response
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from xend_actors import sxp, tally
from xend_actors.access.identity import Principal, principal_of
from xend_actors.errors import Forbidden, Unauthorized, XendError
from xend_actors.web import sxp_json
from xend_actors.web.audit import Audit, AuditEntry
from xend_actors.web.browser import BrowserSite
from xend_actors.web.csrf import cross_site_refusal
from xend_actors.web.forms import decode, request_values
from xend_actors.web.negotiate import (
    HTML,
    JSON,
    JSON_MIMETYPE,
    SXP,
    SXP_MIMETYPE,
    Format,
    error_response,
    wanted,
)
from xend_actors.web.resource import Answer, Op, Reply, Resource, wire

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_FORM_PARTS = 64
MATCHES_KEPT = 256  # routes matched, remembered by path, method and upgrade
KEPT_PATH = 256  # characters of a path whose match is remembered (bounds what is kept)
_AUDITED = "xend.audited"  # in a request's environ once the audit trail has logged it
_ROUTE = "xend.route"  # in a request's environ once matched: its rule, for the latency
_METHODS = frozenset({"GET", "HEAD", "POST"})  # others are counted as "other" (405)
PLAIN_PATHS = frozenset({"/metrics", "/metrics/"})  # the same for browsers and programs


class XendRequest(Request):
    """A request whose body and form are bounded."""

    max_content_length = MAX_BODY_BYTES
    max_form_memory_size = MAX_BODY_BYTES
    max_form_parts = MAX_FORM_PARTS


def _reason(message: str) -> str:
    """The message made fit for an HTTP reason phrase: one latin-1 line, bounded."""
    line = re.sub(r"[\x00-\x1f\x7f]+", " ", message).strip()[:200]
    return line.encode("latin-1", "replace").decode("latin-1") or "Error"


class XendApp:
    """Dispatches ``/xend/...`` requests to their resources."""

    def __init__(self, routes: Iterable[tuple[str, Resource]],
                 site: BrowserSite | None = None, audit: Audit | None = None) -> None:
        routes_kept = list(routes)
        self.url_map = Map(
            [Rule(path, endpoint=resource) for path, resource in routes_kept],
            strict_slashes=False,
            merge_slashes=False,
        )
        self.site = site or BrowserSite()
        self.audit = audit or Audit()
        self._rules = {resource: path for path, resource in routes_kept}

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        refusal = framing_refusal(environ)
        if refusal:
            log.info("%s %s: 400 %s", environ.get("REQUEST_METHOD"),
                     environ.get("PATH_INFO"), refusal)
            response = self._error(400, refusal, wanted(environ))
            response.headers["Connection"] = "close"  # its body's end is unknown
            return response(environ, start_response)
        start = time.monotonic()
        request = XendRequest(environ)
        response = self.respond(request)
        method = request.method if request.method in _METHODS else "other"
        tally.REQUESTS.observe((environ.get(_ROUTE, "none"), method,
                                str(response.status_code)), time.monotonic() - start)
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        wants = wanted(request.environ)
        if wants is HTML:
            if request.path not in PLAIN_PATHS:
                request.environ[_ROUTE] = "pages"
                return self.site.respond(self, request)
            wants = SXP  # /metrics: its errors as a program gets them
        try:
            resource, url_args = self._match(
                request.path, request.method, _upgrades(request.environ))
            request.environ[_ROUTE] = self._rules.get(resource, "none")
            reply = self._dispatch(request, resource, url_args)
        except XendError as error:
            return self._handled(request, error.status, error.message, wants)
        except HTTPException as error:
            return self._handled(request, error.code or 500,
                                 error.description or error.name, wants)
        except Exception:
            log.exception("Internal error serving %s %s", request.method, request.path)
            return self._error(500, "Internal error in xend; see the xend log", wants)
        if isinstance(reply, Response):
            return reply  # a stream the resource made itself (the event stream)
        return self._render(reply, wants)

    @functools.cached_property
    def _match(self) -> Callable[[str, str, bool], tuple[Resource, Mapping[str, Any]]]:
        """The routes, bound once (at the first request, once every rule is added): a
        match needs only the path, the method and whether it is a WebSocket upgrade,
        which ``bind_to_environ`` would work out anew for each request with the host
        (no route here redirects, so the host is never used). The same three always
        match alike, so the last ``MATCHES_KEPT`` found (of short paths) are kept."""
        adapter = self.url_map.bind("xend")

        @functools.lru_cache(maxsize=MATCHES_KEPT)
        def kept(path: str, method: str, websocket: bool) -> tuple[Resource, Mapping[str, Any]]:
            resource, url_args = adapter.match(path, method, websocket=websocket)
            return resource, MappingProxyType(url_args)  # shared by whoever asks again

        def match(path: str, method: str, websocket: bool) -> tuple[Resource, Mapping[str, Any]]:
            if len(path) > KEPT_PATH:
                resource, url_args = adapter.match(path, method, websocket=websocket)
                return resource, url_args
            return kept(path, method, websocket)

        return match

    def _dispatch(self, request: Request, resource: Resource,
                  url_args: Mapping[str, Any]) -> Reply | Response:
        values = request_values(request)
        if request.method in ("GET", "HEAD"):
            names = request.args.getlist("op")  # not .get: it raises (and catches) if none
            chosen = resource.ops.get(names[0]) if names and names[0] else None
            if chosen is None or not chosen.on_get:
                self.authorize(request, resource)
                return _as_reply(resource.get(request, **url_args))
        elif request.method == "POST":
            if not resource.ops:  # a directory with nothing to run, as the original's
                raise XendError(f"Method not allowed: POST to {request.path}", status=405)
            chosen = self.chosen_op(resource, values)
        else:
            raise XendError(f"Method not allowed: {request.method}", status=405)
        refusal = cross_site_refusal(request)
        if refusal:
            raise Forbidden(refusal)
        return self.run_op(request, resource, chosen, url_args, values)

    @staticmethod
    def chosen_op(resource: Resource, values: MultiDict[str, str]) -> Op:
        """The op a POST names in its ``op`` field (exactly one)."""
        names = values.getlist("op")
        if len(names) != 1:
            raise XendError("Invalid request", status=406)
        chosen = resource.ops.get(names[0])
        if chosen is None:
            raise XendError(f"Operation not implemented: {names[0]}", status=501)
        return chosen

    @staticmethod
    def authorize(request: Request, resource: Resource, chosen: Op | None = None) -> None:
        """Whether the request's principal may GET ``resource`` or run ``chosen`` on it:
        admins anything, viewers only GETs that change nothing; else 401 or 403."""
        if resource.public:
            return
        principal = principal_of(request.environ)
        if principal is None:
            raise Unauthorized("Authentication required")
        if principal.is_admin:
            return
        reading = request.method in ("GET", "HEAD") and (chosen is None or chosen.reads)
        if resource.admin_only or not reading:
            what = f"run {chosen.name}" if chosen else f"{request.method} {request.path}"
            raise Forbidden(f"{principal} is a {principal.role.value}: it may not {what}")

    def run_op(self, request: Request, resource: Resource, chosen: Op,
               url_args: Mapping[str, Any], values: MultiDict[str, str]) -> Reply | Response:
        """Run ``chosen`` with its declared parameters taken from ``values``, if the
        principal may; the attempt goes to the audit trail whatever its end."""
        if chosen.reads and request.method in ("GET", "HEAD"):
            self.authorize(request, resource, chosen)
            return self._run(request, resource, chosen, url_args, values)
        principal = principal_of(request.environ)
        dom = url_args.get("dom")
        try:
            self.authorize(request, resource, chosen)
            reply = self._run(request, resource, chosen, url_args, values)
        except XendError as error:
            self._audit(principal, chosen, request, dom, error.status, error.message)
            raise
        except Exception:
            self._audit(principal, chosen, request, dom, 500, "internal error")
            raise
        self._audit(principal, chosen, request, dom,
                    reply.status if isinstance(reply, Reply) else reply.status_code)
        return reply

    def _audit(self, who: Principal | None, chosen: Op, request: Request, dom: object,
               status: int, message: str = "") -> None:
        request.environ[_AUDITED] = True  # its line in the log is the audit's
        self.audit(AuditEntry(who, chosen.name, request.path,
                              None if dom is None else str(dom), status, message))

    @staticmethod
    def _run(request: Request, resource: Resource, chosen: Op, url_args: Mapping[str, Any],
             values: MultiDict[str, str]) -> Reply | Response:
        args = decode(chosen.params, values)
        reply = _as_reply(chosen.handler(resource, request, **url_args, **args))
        if isinstance(reply, Reply) and reply.status == 200 and chosen.status != 200:
            reply = Reply(reply.value, chosen.status, reply.location, reply.text, reply.shown)
        return reply

    @staticmethod
    def _render(reply: Reply, wants: Format = SXP) -> Response:
        headers = {"Location": reply.location} if reply.location else None
        if wants is JSON:  # the value (or the text) as sxp_json maps it
            value = str(reply.value) if reply.text else wire(reply.value)
            return Response(sxp_json.dumps(value), reply.status, headers,
                            content_type=JSON_MIMETYPE)
        if reply.text:
            return Response(str(reply.value), reply.status, headers, mimetype="text/plain")
        shown = reply.shown if reply.shown is not None else sxp.show(wire(reply.value))
        # content_type: what mimetype would make of it (no charset), without working it out
        return Response(shown, reply.status, headers, content_type=SXP_MIMETYPE)

    @classmethod
    def _handled(cls, request: Request, status: int, message: str,
                 wants: Format) -> Response:
        """An expected failure's reply, and its one log line (an op's is the audit's)."""
        if not request.environ.get(_AUDITED):
            log.info("%s %s: %d %s", request.method, request.path, status,
                     _reason(message))
        return cls._error(status, message, wants)

    @staticmethod
    def _error(status: int, message: str, wants: Format) -> Response:
        response = error_response(message, wants)
        response.status = f"{status} {_reason(message)}"
        return response


def framing_refusal(environ: WSGIEnvironment) -> str | None:
    """Why a request's body cannot be delimited for sure, or None: both a Content-Length
    and a Transfer-Encoding, a Content-Length that is not one number, or a
    Transfer-Encoding other than chunked (RFC 9112 §6.1, §6.3)."""
    length = environ.get("CONTENT_LENGTH")
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    if length is not None and coding is not None:
        return "Bad request: both Content-Length and Transfer-Encoding are given"
    if length is not None and not (length.isdigit() and length.isascii()) and length != "":
        return f"Bad request: invalid Content-Length {length[:40]!r}"
    if coding is not None and coding.strip().lower() != "chunked":
        return f"Bad request: unsupported Transfer-Encoding {coding[:40]!r}"
    return None


def _upgrades(environ: WSGIEnvironment) -> bool:
    """Whether the request asks for a WebSocket (as werkzeug's ``bind_to_environ`` says)."""
    upgrade = environ.get("HTTP_UPGRADE")
    return upgrade is not None and upgrade.lower() == "websocket" and any(
        part.strip(" \t") == "upgrade"
        for part in environ.get("HTTP_CONNECTION", "").lower().split(","))


def _as_reply(result: Reply | Response | Answer) -> Reply | Response:
    return result if isinstance(result, Reply | Response) else Reply(result)
