"""Every URL xend serves, in one table (facts §4.4)."""

from __future__ import annotations

from wsgiref.types import WSGIEnvironment

from werkzeug import Request, Response
from werkzeug.routing import Rule

from xend_actors.web import console, event, samples
from xend_actors.web.app import XendApp
from xend_actors.web.audit import Audit
from xend_actors.web.browser import BrowserSite
from xend_actors.web.console import (
    ConsoleAttachResource,
    ConsoleDirResource,
    ConsoleLogResource,
    ConsoleResource,
)
from xend_actors.web.domain import DomainDirResource, DomainResource
from xend_actors.web.event import EventResource
from xend_actors.web.login import LoginResource, LogoutResource
from xend_actors.web.metrics import MetricsResource
from xend_actors.web.node import DmesgResource, NodeLogResource, NodeResource, NotifyResource
from xend_actors.web.pool import PoolResource
from xend_actors.web.resource import Resource
from xend_actors.web.samples import DomainSamplesResource, SamplesResource
from xend_actors.web.services import Services
from xend_actors.web.static_files import FaviconResource, StaticResource
from xend_actors.web.token import TokenDirResource, TokenResource
from xend_actors.web.vnet import VnetDirResource, VnetResource


class RootResource(Resource):
    """``/xend/``: the fixed list of what is below it (and ``pool`` in a pool)."""

    children = ("node", "domain", "console", "event", "device", "vnet")

    def __init__(self, in_pool: bool = False) -> None:
        self.listed = [*self.children, *(["pool"] if in_pool else [])]

    def get(self, request: Request, **url_args: str) -> list[str]:
        return ["ls", *self.listed]


class HomeResource(Resource):
    """``/``: a redirect to ``/xend/``, where every breadcrumb starts. Public, since a
    browser's session cookie is for ``/xend/`` only: one not logged in is sent on from
    ``/xend/`` to the login page like from any other page."""

    public = True

    def get(self, request: Request, **url_args: str) -> Response:
        return Response(status=302, headers={"Location": "/xend/"})


class EmptyResource(Resource):
    """A directory with nothing listed yet (``/xend/device/``, as in the original)."""


ATTACH = "/xend/console/<int:port>/attach"


def make_app(services: Services) -> XendApp:
    keyed = [] if services.keys is None else [
        ("/xend/login", LoginResource(services.config, services.keys)),
        ("/xend/logout", LogoutResource(services.keys)),
        ("/xend/token/", TokenDirResource(services.keys.tokens)),
        ("/xend/token/<name>/", TokenResource(services.keys.tokens)),
    ]
    attach = ConsoleAttachResource(services)
    static = StaticResource()
    app = XendApp(
        [
            ("/", HomeResource()),
            ("/xend/", RootResource(in_pool=services.pool is not None)),
            ("/xend/node/", NodeResource(services)),
            ("/xend/node/dmesg", DmesgResource(services)),
            ("/xend/node/log", NodeLogResource(services)),
            ("/xend/node/notify", NotifyResource(services)),
            ("/xend/domain/", DomainDirResource(services)),
            ("/xend/domain/<path:dom>/", DomainResource(services)),
            ("/xend/domain/<dom>/samples", DomainSamplesResource(services)),
            ("/xend/samples/", SamplesResource(services)),
            ("/metrics", MetricsResource(services)),
            ("/xend/console/", ConsoleDirResource(services)),
            ("/xend/console/<int:port>/", ConsoleResource(services)),
            ("/xend/console/<int:port>/log", ConsoleLogResource(services)),
            (ATTACH, attach),
            ("/xend/event/", EventResource(services)),
            ("/xend/device/", EmptyResource()),
            ("/xend/static/<name>", static),
            ("/favicon.ico", FaviconResource(static)),
            ("/xend/vnet/", VnetDirResource(services)),
            ("/xend/vnet/<vnet>/", VnetResource(services)),
            ("/xend/pool/", PoolResource(services)),  # its ops: web/pool_ops.py
            *keyed,
        ],
        site=BrowserSite(services),  # the HTML pages: web/pages.py
        audit=Audit(services.events.publish),
    )
    # werkzeug routes a WebSocket upgrade only to a rule that says so; the plain rule above
    # stays, so that a request without the upgrade gets the attach's own clear 400.
    app.url_map.add(Rule(ATTACH, endpoint=attach, websocket=True))
    return app


def lingers(environ: WSGIEnvironment) -> bool:
    """Whether a request may wait by design (each resource knows its own): the server
    answers such a one on a thread of its own, so that it never holds up short ones."""
    return event.waits(environ) or console.waits(environ) or samples.waits(environ)
