"""The browser's way through xend: HTML pages on GET, guarded forms on POST.

Owns every request negotiated as a browser (``negotiate.wants_html``). A GET shows
the URL's page (``pages.PAGES``) and never runs an op. A POST must pass the CSRF and
origin check (``csrf.py``) before anything is decoded or run; it then runs the op
like a program's POST and answers with a redirect (303) to the page to show next, so
reloading that page repeats nothing. When the op fails, the URL's page is shown again
with the message beside the form and the values that were sent, under the op's error
status. Streams a resource makes itself (the event stream, a console's scrollback,
static files) pass through unchanged.

Pages follow the request's principal (``access.identity``): every page names who is
logged in, with a logout button for a browser session (``login.py``), and only an
admin's pages carry the forms that change things. A viewer's crafted POST is refused
by the app like any other client's (403), and shown on its own page.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from werkzeug import Request, Response
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.test import EnvironBuilder

from xend_actors.access.identity import Via, principal_of
from xend_actors.errors import BadRequest, XendError
from xend_actors.web.csrf import FIELD, CsrfGuard
from xend_actors.web.gate import CHALLENGE
from xend_actors.web.negotiate import SXP_MIMETYPE
from xend_actors.web.pages import GENERIC, PAGES, Page, Problem, View
from xend_actors.web.resource import Answer, Reply, Resource
from xend_actors.web.services import Services, answer

if TYPE_CHECKING:
    from jinja2 import Environment

    from xend_actors.web.app import XendApp

log = logging.getLogger(__name__)

# Form fields that steer the page, not the op.
NEXT_FIELD = "next"
FORM_FIELD = "form"
_NOT_KEPT = (FIELD, "password")  # never written back into a page
_DONE = re.compile(r"[a-z_]{1,40}")
HOME_PATH = "/xend/"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Same-origin forms then carry a Referer, the fallback when a browser sends no Origin.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages carry the form token
}


@functools.cache
def _templates() -> Environment:
    # Made at the first page: jinja2 is for browsers, and most clients of xend are not.
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("xend_actors.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


class BrowserSite:
    """Answers browsers with pages and runs their forms."""

    def __init__(self, services: Services | None = None,
                 pages: Mapping[str, Page] = PAGES, guard: CsrfGuard | None = None) -> None:
        self.services = services
        self.pages = pages
        self.guard = guard or CsrfGuard()

    def respond(self, app: XendApp, request: Request) -> Response:
        cookie, fresh = self.guard.cookie(request)
        try:
            adapter = app.url_map.bind_to_environ(request.environ)
            rule, url_args = adapter.match(return_rule=True)
            if request.method == "POST":
                response = self._post(app, request, rule, url_args, cookie)
            elif request.method in ("GET", "HEAD"):
                response = self._get(app, request, rule, url_args, cookie)
            else:
                raise XendError(f"Method not allowed: {request.method}", status=405)
        except XendError as error:
            response = self._error_page(request, error.status, error.message, cookie)
        except HTTPException as error:
            response = self._error_page(request, error.code or 500,
                                        error.description or error.name, cookie)
        except Exception:
            log.exception("Internal error serving page %s %s", request.method, request.path)
            response = self._error_page(request, 500, "Internal error in xend; see the xend log",
                                        cookie)
        if fresh and response.mimetype == "text/html":
            self.guard.set_cookie(response, cookie, secure=request.scheme == "https")
        return response

    def _get(self, app: XendApp, request: Request, rule: Rule, url_args: Mapping[str, Any],
             cookie: str) -> Response:
        resource: Resource = rule.endpoint
        app.authorize(request, resource)
        result = resource.get(request, **url_args)
        if isinstance(result, Response):
            return result
        value = result.value if isinstance(result, Reply) else result
        done = request.args.get("done", "")
        return self._page(app, request, rule, url_args, value, cookie,
                          done=done if _DONE.fullmatch(done) else None)

    def _post(self, app: XendApp, request: Request, rule: Rule, url_args: Mapping[str, Any],
              cookie: str) -> Response:
        self.guard.check(request, request.form.get(FIELD))
        resource: Resource = rule.endpoint
        form = request.form.get(FORM_FIELD) or request.form.get("op", "")
        values: MultiDict[str, str] = MultiDict(request.form)
        try:
            values = form_values(request)
            chosen = app.chosen_op(resource, values)
            reply = app.run_op(request, resource, chosen, url_args, values)
        except XendError as error:
            if error.status == 403 and not may_act(request):
                raise  # a viewer's crafted form: none of its forms is on the page to show it
            kept = {name: text for name, text in values.items() if name not in _NOT_KEPT}
            return self._failed(app, request, rule, url_args, cookie,
                                Problem(form, error.message, kept), error)
        if isinstance(reply, Response):
            return reply  # the op answers itself (a login sets its cookie and goes on)
        target = (_local_path(values.get(NEXT_FIELD), request)
                  or _local_path(reply.location, request) or request.path)
        separator = "&" if "?" in target else "?"
        done = form if _DONE.fullmatch(form) else chosen.name
        return Response(status=303, headers={
            "Location": f"{target}{separator}{urlencode({'done': done})}"})

    def _failed(self, app: XendApp, request: Request, rule: Rule, url_args: Mapping[str, Any],
                cookie: str, problem: Problem, error: XendError) -> Response:
        """The URL's page again, the op's message beside its form; else just the message."""
        try:
            value = rule.endpoint.get(request, **url_args)
        except XendError:
            raise error from None  # e.g. the domain is gone: its page is no more
        if isinstance(value, Response):
            raise error
        value = value.value if isinstance(value, Reply) else value
        return self._page(app, request, rule, url_args, value, cookie, problem=problem,
                          status=error.status)

    def _page(self, app: XendApp, request: Request, rule: Rule, url_args: Mapping[str, Any],
              value: Answer, cookie: str, *, problem: Problem | None = None,
              done: str | None = None, status: int = 200) -> Response:
        page = self.pages.get(rule.rule, GENERIC)
        last_event = (answer(self.services.events.last_seq(), "the event bus")
                      if self.services else None)
        view = View(request=request, resource=rule.endpoint, value=value, url_args=url_args,
                    fetch=lambda path: _internal_get(app, request, path).value,
                    fetch_raw=lambda path: _internal_raw(app, request, path),
                    last_event=last_event)
        context = {"last_event": last_event, **page.context(view)}
        return self._render(request, page.template, context, cookie, status,
                            problem=problem, done=done)

    def _error_page(self, request: Request, status: int, message: str,
                    cookie: str) -> Response:
        return self._render(request, "error.html", {
            "status": status, "message": message, "back": back_path(request)}, cookie, status)

    def _render(self, request: Request, template: str, context: dict[str, Any], cookie: str,
                status: int, **extra: Any) -> Response:
        principal = principal_of(request.environ)
        if principal is not None and principal.via is Via.OPEN:
            principal = None  # (xend-http-auth no): nobody to name, as in the original
        html = _templates().get_template(template).render(
            crumbs=breadcrumb(request.path), path=request.path,
            csrf_field=FIELD, csrf_token=self.guard.token(cookie),
            principal=principal, may_act=may_act(request),
            in_pool=self.services is not None and self.services.pool is not None,
            **extra, **context)
        headers = dict(_SECURITY_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = CHALLENGE
        return Response(html, status, headers, mimetype="text/html")


def may_act(request: Request) -> bool:
    """Whether the request's principal may change things, so its pages show the forms
    that do (the server refuses anybody else's ops all the same)."""
    principal = principal_of(request.environ)
    return principal is not None and principal.is_admin


def form_values(request: Request) -> MultiDict[str, str]:
    """A browser form's fields and files; a field left empty is no value.

    Browsers send an empty text field as ``""`` and a file input left empty as a part
    with no name and no bytes; a form offering both (paste or upload the config) must
    not see two values.
    """
    values: MultiDict[str, str] = MultiDict()
    for name, text in [*request.args.items(multi=True), *request.form.items(multi=True)]:
        if text.strip():
            values.add(name, text)
    for name, upload in request.files.items(multi=True):
        data = upload.read()
        if not data and not upload.filename:
            continue
        try:
            values.add(name, data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{name}: uploaded file is not UTF-8 text") from None
    return values


def breadcrumb(path: str) -> list[tuple[str, str]]:
    """Links for ``/`` and each path segment, each ending in a slash (facts §4.1)."""
    crumbs, href = [("/", "/")], "/"
    for segment in (s for s in path.split("/") if s):
        href += segment + "/"
        crumbs.append((href, segment))
    return crumbs


def back_path(request: Request) -> str:
    """Where an error page's Back link leads: the page the browser came from, if it is
    one of this xend's own (its ``Referer``), else ``/xend/``."""
    came_from = _local_path(request.headers.get("Referer"), request)
    if came_from is None or (request.method != "POST"
                             and urlsplit(came_from).path.rstrip("/") == request.path.rstrip("/")):
        return HOME_PATH  # not back to the page that failed
    return came_from


def _local_path(url: str | None, request: Request) -> str | None:
    """``url`` as a path on this xend, or None if it leads elsewhere."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a bracketed host left open
        return None
    if (parts.scheme or parts.netloc) and not url.startswith(request.host_url):
        return None
    path = parts.path
    if not path.startswith("/xend/") or path.startswith("//") or "\\" in path:
        return None
    return path + (f"?{parts.query}" if parts.query else "")


def _internal(app: XendApp, request: Request, path: str) -> Response | Reply:
    """What the resource at ``path`` answers a program's GET, without going over HTTP."""
    parts = urlsplit(path)
    builder = EnvironBuilder(path=parts.path, query_string=parts.query,
                             base_url=request.host_url, headers=[("Accept", SXP_MIMETYPE)])
    try:
        sub = Request(builder.get_environ())
    finally:
        builder.close()
    try:
        rule, url_args = app.url_map.bind_to_environ(sub.environ).match(return_rule=True)
    except HTTPException as error:
        raise XendError(f"{path}: {error.description or error.name}",
                        status=error.code or 500) from None
    result = rule.endpoint.get(sub, **url_args)
    return result if isinstance(result, Response | Reply) else Reply(result)


def _internal_get(app: XendApp, request: Request, path: str) -> Reply:
    result = _internal(app, request, path)
    if isinstance(result, Response):
        raise XendError(f"{path} answers a stream, not a value")
    return result


def _internal_raw(app: XendApp, request: Request, path: str) -> Response:
    result = _internal(app, request, path)
    if not isinstance(result, Response):
        raise XendError(f"{path} answers a value, not a stream")
    return result
