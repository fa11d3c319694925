"""The ``/xend/event`` resource: injecting an event (the original's was broken)."""

from __future__ import annotations

from werkzeug import Request

from xend_actors import sxp
from xend_actors.errors import BadRequest
from xend_actors.web.forms import Kind, Param
from xend_actors.web.resource import Resource, op
from xend_actors.web.services import Services


class EventResource(Resource):
    def __init__(self, services: Services) -> None:
        self.events = services.events

    @op("inject", params=(Param("event", Kind.SXPR),))
    def inject(self, request: Request, event: sxp.Value) -> str:
        """Publish an event named by the SXP's name, with the whole SXP as its value."""
        name = sxp.name(event)
        if not name or not isinstance(name, str):
            raise BadRequest("event: expected (NAME ...) or a name")
        self.events.publish(name, event)
        return "0"
