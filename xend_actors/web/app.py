"""The WSGI application: URL routing, op dispatch, errors and replies.

Routing is a werkzeug ``Map`` from paths to resources; every path takes an optional
trailing slash, as the original's did. A handled ``XendError`` becomes its status
with the message as reason phrase and an ``(xend.err '...')`` body, so clients that
follow the original client rule (facts §4.3) still read the message. Bodies and
forms have size limits; nothing unbounded is parsed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from xend_actors import sxp
from xend_actors.errors import XendError
from xend_actors.web.forms import decode, request_values
from xend_actors.web.negotiate import SXP_MIMETYPE, wants_html
from xend_actors.web.resource import Reply, Resource

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_FORM_PARTS = 64


class XendRequest(Request):
    """A request whose body and form are bounded."""

    max_content_length = MAX_BODY_BYTES
    max_form_memory_size = MAX_BODY_BYTES
    max_form_parts = MAX_FORM_PARTS


_html = Environment(
    loader=PackageLoader("xend_actors.web", "templates"),
    autoescape=select_autoescape(default=True),
)


def _reason(message: str) -> str:
    """The message made fit for an HTTP reason phrase: one latin-1 line, bounded."""
    line = re.sub(r"[\x00-\x1f\x7f]+", " ", message).strip()[:200]
    return line.encode("latin-1", "replace").decode("latin-1") or "Error"


class XendApp:
    """Dispatches ``/xend/...`` requests to their resources."""

    def __init__(self, routes: Iterable[tuple[str, Resource]]) -> None:
        self.url_map = Map(
            [Rule(path, endpoint=resource) for path, resource in routes],
            strict_slashes=False,
            merge_slashes=False,
        )

    def __call__(self, environ: dict, start_response):  # type: ignore[no-untyped-def]
        request = XendRequest(environ)
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        html = wants_html(request)
        try:
            adapter = self.url_map.bind_to_environ(request.environ)
            resource, url_args = adapter.match()
            reply = self._dispatch(request, resource, url_args)
        except XendError as error:
            return self._error(error.status, error.message, html)
        except HTTPException as error:
            return self._error(error.code or 500, error.description or error.name, html)
        except Exception:
            log.exception("Internal error serving %s %s", request.method, request.path)
            return self._error(500, "Internal error in xend; see the xend log", html)
        if isinstance(reply, Response):
            return reply  # a stream the resource made itself (the event stream)
        return self._render(request, reply, html)

    def _dispatch(self, request: Request, resource: Resource,
                  url_args: dict) -> Reply | Response:
        values = request_values(request)
        if request.method in ("GET", "HEAD"):
            name = request.args.get("op")
            chosen = resource.ops.get(name) if name else None
            if chosen is None or not chosen.on_get:
                return _as_reply(resource.get(request, **url_args))
        elif request.method == "POST":
            names = values.getlist("op")
            if len(names) != 1:
                raise XendError("Invalid request", status=406)
            chosen = resource.ops.get(names[0])
            if chosen is None:
                raise XendError(f"Operation not implemented: {names[0]}", status=501)
        else:
            raise XendError(f"Method not allowed: {request.method}", status=405)
        args = decode(chosen.params, values)
        reply = _as_reply(chosen.handler(resource, request, **url_args, **args))
        if reply.status == 200 and chosen.status != 200:
            reply = Reply(reply.value, chosen.status, reply.location, reply.text)
        return reply

    def _render(self, request: Request, reply: Reply, html: bool) -> Response:
        headers = {"Location": reply.location} if reply.location else {}
        if reply.text:
            return Response(str(reply.value), reply.status, headers, mimetype="text/plain")
        if not html:
            body = sxp.show(reply.value)
            return Response(body, reply.status, headers, mimetype=SXP_MIMETYPE)
        page = _html.get_template("value.html").render(
            crumbs=_breadcrumb(request.path), value=sxp.pretty(reply.value)
        )
        return Response(page, reply.status, headers, mimetype="text/html")

    @staticmethod
    def _error(status: int, message: str, html: bool) -> Response:
        response = Response(
            f"Error : {message}" if html else sxp.show(["xend.err", message]),
            mimetype="text/plain" if html else SXP_MIMETYPE,
        )
        response.status = f"{status} {_reason(message)}"
        return response


def _as_reply(result: Reply | Response | sxp.Value) -> Reply | Response:
    return result if isinstance(result, Reply | Response) else Reply(result)


def _breadcrumb(path: str) -> list[tuple[str, str]]:
    """Links for ``/`` and each path segment, each ending in a slash (facts §4.1)."""
    crumbs, href = [("/", "/")], "/"
    for segment in (s for s in path.split("/") if s):
        href += segment + "/"
        crumbs.append((href, segment))
    return crumbs
