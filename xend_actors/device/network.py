"""The Network actor: xend's host networking — the network script, link renames, vnets.

When xend starts it runs the configured ``network-script`` with ``start bridge=<vif-bridge>
antispoof=yes|no`` (facts §9.7), unless the bridge is ``null``; our ``network`` leaves a
bridge that is already set up as it is. xend never runs ``stop``: domains keep running
when xend stops, and taking their network away is the operator's call.

It is the one place inside xend that speaks netlink (pyroute2 sockets belong to the
thread that made them): it renames a backend link to a vif's ``vifname``, and makes and
removes the links of vnets (``netscripts/vnet.py``) for the Vnets actor.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.config import XendConfig
from xend_actors.device.scripts import run_script
from xend_actors.errors import BadRequest, XendError
from xend_actors.netscripts.names import valid_ifname
from xend_actors.netscripts.vnet_spec import Vnet
from xend_actors.trace import TracedActor

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)



class Network(TracedActor):
    def __init__(self, config: XendConfig) -> None:
        super().__init__()
        self._config = config
        self._ipr: IPRoute | None = None

    def on_stop(self) -> None:
        if self._ipr is not None:
            self._ipr.close()

    def start_network(self) -> None:
        """Run the network script's ``start``; a failure is logged, xend runs on."""
        config = self._config
        if config.vif_bridge == "null":  # the original's word for "no bridging here"
            return
        try:
            run_script(config, config.network_script,
                       ["start", f"bridge={config.vif_bridge}",
                        f"antispoof={'yes' if config.vif_antispoof else 'no'}"],
                       what=f"network script {config.network_script} start")
        except XendError as error:
            log.error("%s", error.message)

    def rename_link(self, old: str, new: str) -> None:
        """Rename link ``old`` to ``new`` (it is brought down for it, as Linux requires)."""
        if not valid_ifname(new):
            raise BadRequest(f"invalid vifname {new!r}: use 1 to 15 letters, digits and "
                             "_ . : -")
        from pyroute2.netlink.exceptions import NetlinkError  # see _netlink

        ipr = self._netlink()
        try:
            index = ipr.link_lookup(ifname=old)
            if not index:
                raise XendError(f"cannot rename {old} to {new}: no link {old}")
            ipr.link("set", index=index[0], state="down")
            ipr.link("set", index=index[0], ifname=new)
        except NetlinkError as error:
            raise XendError(f"cannot rename {old} to {new}: {error.args[-1]}") from None

    def vnet_up(self, vnet: Vnet) -> None:
        """Make the vnet's bridge and VXLAN device, or check the ones there fit."""
        from xend_actors.netscripts import vnet as links  # see _netlink

        with _about(vnet):
            links.vnet_up(self._netlink(), vnet)

    def vnet_down(self, vnet: Vnet) -> list[str]:
        """Remove the links the vnet made; the ports its bridge still had."""
        from xend_actors.netscripts import vnet as links  # see _netlink

        with _about(vnet):
            return links.vnet_down(self._netlink(), vnet)

    def _netlink(self) -> IPRoute:
        # pyroute2 (over 160 modules, some 12 MiB) is imported at the first netlink call,
        # not at start: a xend whose vifs need no rename and that has no vnet makes none.
        from pyroute2 import IPRoute

        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr


class NetworkProxy(ActorMemberMixin, pykka.ActorProxy[Network]):
    start_network = proxy_method(Network.start_network)
    rename_link = proxy_method(Network.rename_link)
    vnet_up = proxy_method(Network.vnet_up)
    vnet_down = proxy_method(Network.vnet_down)


@contextlib.contextmanager
def _about(vnet: Vnet) -> Iterator[None]:
    """A netlink failure no step named becomes an error naming the vnet."""
    from pyroute2.netlink.exceptions import NetlinkError  # _about runs around a netlink call

    try:
        yield
    except (OSError, NetlinkError) as error:
        raise XendError(f"vnet {vnet.id}: netlink: {error}") from None
