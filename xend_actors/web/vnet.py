"""The ``/xend/vnet`` resources: create, list, show and delete vnets (facts §4.4).

``GET /xend/vnet/`` lists the vnet ids, ``?detail=1`` their configs; ``POST op=create``
takes ``config`` as SXP text or an uploaded file and answers 201 with the canonical
config; ``GET /xend/vnet/<id>`` is one config; ``POST /xend/vnet/<id> op=delete``.
The config and the errors are ``device/vnets.py``'s.
"""

from __future__ import annotations

from werkzeug import Request

from xend_actors import sxp
from xend_actors.device.vnets import parse_vnet_config
from xend_actors.web.forms import Kind, Param
from xend_actors.web.resource import Reply, Resource, op
from xend_actors.web.services import Services, answer


class VnetDirResource(Resource):
    """``/xend/vnet/``: every vnet's id (or config with ``detail=1``); create."""

    def __init__(self, services: Services) -> None:
        self.vnets = services.vnets

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        if request.args.get("detail", "0") not in ("0", ""):
            return answer(self.vnets.configs(), "the vnets")
        return answer(self.vnets.ids(), "the vnets")

    @op("create", params=(Param("config", Kind.SXPR),), status=201)
    def create(self, request: Request, config: sxp.Value) -> Reply:
        vnet = parse_vnet_config(config)
        created = answer(self.vnets.create(vnet), "the vnets")
        return Reply(created, 201, location=f"{request.host_url}xend/vnet/{vnet.id}")


class VnetResource(Resource):
    """``/xend/vnet/<id>``: one vnet's config; ``delete`` removes it."""

    def __init__(self, services: Services) -> None:
        self.vnets = services.vnets

    def get(self, request: Request, vnet: str) -> sxp.Value:
        return answer(self.vnets.config(vnet), "the vnets")

    @op("delete")
    def delete(self, request: Request, vnet: str) -> str:
        answer(self.vnets.delete(vnet), "the vnets")
        return "0"
