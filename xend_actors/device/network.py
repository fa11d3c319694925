"""The Network actor: xend's host networking — the network script and link renames.

When xend starts it runs the configured ``network-script`` with ``start bridge=<vif-bridge>
antispoof=yes|no`` (facts §9.7), unless the bridge is ``null``; our ``network`` leaves a
bridge that is already set up as it is. xend never runs ``stop``: domains keep running
when xend stops, and taking their network away is the operator's call. It is also the
one place inside xend that speaks netlink (pyroute2 sockets belong to the thread that
made them), for renaming a backend link to a vif's ``vifname``.
"""

from __future__ import annotations

import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from xend_actors.config import XendConfig
from xend_actors.device.scripts import run_script
from xend_actors.errors import BadRequest, XendError
from xend_actors.netscripts.names import valid_ifname
from xend_actors.trace import TracedActor

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
            raise BadRequest(f"invalid vifname {new!r}")
        if self._ipr is None:
            self._ipr = IPRoute()
        try:
            index = self._ipr.link_lookup(ifname=old)
            if not index:
                raise XendError(f"cannot rename {old} to {new}: no link {old}")
            self._ipr.link("set", index=index[0], state="down")
            self._ipr.link("set", index=index[0], ifname=new)
        except NetlinkError as error:
            raise XendError(f"cannot rename {old} to {new}: {error.args[-1]}") from None
