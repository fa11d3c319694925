"""Every URL xend serves, in one table (facts §4.4)."""

from __future__ import annotations

from xend_actors.web.app import XendApp
from xend_actors.web.node import NodeLogResource, NodeResource
from xend_actors.web.resource import Resource
from xend_actors.web.services import Services


class RootResource(Resource):
    """``/xend/``: the fixed list of what is below it."""

    children = ("node", "domain", "console", "event", "device", "vnet")


def make_app(services: Services) -> XendApp:
    return XendApp(
        [
            ("/xend/", RootResource()),
            ("/xend/node/", NodeResource(services)),
            ("/xend/node/log", NodeLogResource(services)),
        ]
    )
