"""The ``/xend/node`` resources: node info, scheduler knobs, dmesg, the log, notify URLs.

See facts §4.4; ``notify`` was listed there but never built.

Decision on the original's quirk (facts §15 item 13): ``shutdown`` and ``reboot`` of
the node were no-ops answering 0; here they say plainly that xend does not do that.
"""

from __future__ import annotations

from werkzeug import Request

from xend_actors import sxp
from xend_actors.errors import NotFound, XendError
from xend_actors.node import node_info
from xend_actors.web.forms import Kind, Param
from xend_actors.web.resource import Reply, Resource, op
from xend_actors.web.services import Services, answer


class NodeResource(Resource):
    children = ("dmesg", "log", "notify")

    def __init__(self, services: Services) -> None:
        self.hypervisor = services.hypervisor
        self.notifier = services.notifier
        self.events = services.events

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        phys = answer(self.hypervisor.physinfo(), "the hypervisor")
        return node_info(phys, answer(self.events.unwritten(), "the event bus")).sxpr()

    @op("shutdown", "reboot")
    def host_power(self, request: Request) -> None:
        raise XendError("xend does not shut down or reboot the host; use the host's own "
                        "tools (xm shutdown --all stops the domains)", status=501)

    @op("cpu_rrobin_slice_set", params=(Param("slice", Kind.INT),))
    def rrobin_slice(self, request: Request, slice: int) -> str:
        answer(self.hypervisor.set_rrobin_slice(slice), "the hypervisor")
        return "0"

    @op("cpu_bvt_slice_set", params=(Param("ctx_allow", Kind.INT),))
    def bvt_slice(self, request: Request, ctx_allow: int) -> str:
        answer(self.hypervisor.set_bvt_ctx_allow(ctx_allow), "the hypervisor")
        return "0"

    @op("notify", params=(Param("url"),))
    def notify(self, request: Request, url: str) -> str:
        """POST every event to ``url`` from now on (listed in the original, never built)."""
        answer(self.notifier.register(url), "the notifier")
        return "0"

    @op("unnotify", params=(Param("url"),))
    def unnotify(self, request: Request, url: str) -> str:
        answer(self.notifier.unregister(url), "the notifier")
        return "0"


class NotifyResource(Resource):
    """The notify URLs, sorted: ``(URL ...)``."""

    def __init__(self, services: Services) -> None:
        self.notifier = services.notifier

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        return answer(self.notifier.urls(), "the notifier")


class DmesgResource(Resource):
    """The hypervisor's console ring, as plain text even for programs."""

    def __init__(self, services: Services) -> None:
        self.hypervisor = services.hypervisor

    def get(self, request: Request, **url_args: str) -> Reply:
        return Reply(answer(self.hypervisor.dmesg(), "the hypervisor"), text=True)

    @op("clear")
    def clear(self, request: Request) -> str:
        answer(self.hypervisor.dmesg(clear=True), "the hypervisor")
        return "0"


class NodeLogResource(Resource):
    """The xend log file as plain text, for programs and browsers alike."""

    def __init__(self, services: Services) -> None:
        self.logfile = services.config.logfile

    def get(self, request: Request, **url_args: str) -> Reply:
        try:
            return Reply(self.logfile.read_text(errors="replace"), text=True)
        except FileNotFoundError:
            raise NotFound(f"no log file at {self.logfile}") from None
