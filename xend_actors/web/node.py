"""The ``/xend/node`` resources: node info and the xend log (facts §4.4)."""

from __future__ import annotations

from werkzeug import Request

from xend_actors import sxp
from xend_actors.errors import NotFound
from xend_actors.node import node_info
from xend_actors.web.resource import Reply, Resource
from xend_actors.web.services import Services


class NodeResource(Resource):
    children = ("dmesg", "log")

    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        return node_info(self.services.physinfo()).sxpr()


class NodeLogResource(Resource):
    """The xend log file as plain text, for programs and browsers alike."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self, request: Request, **url_args: str) -> Reply:
        try:
            return Reply(self.services.config.logfile.read_text(errors="replace"), text=True)
        except FileNotFoundError:
            raise NotFound(f"no log file at {self.services.config.logfile}") from None
