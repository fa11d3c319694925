"""The qemu domains' device counters, read in one batch for the sampler.

A vbd's are qemu's own (``query-blockstats`` on the monitor xend already holds, one
command a guest, its nodes named ``vbd-VDEV`` by ``backends.py``). A vif's are its tap's,
as the host's kernel counts them: one netlink dump of every link (``RTM_GETLINK``,
through pyroute2, imported at the first sample) for all the taps at once. The tap's
receive is what the guest sent, so the two directions are swapped to the guest's view.
A tap is found by the name qemu gave it, ``vif<domid>.<handle>``; one a vif script
renamed (``vifname``) is not counted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from xend_actors.errors import XendError
from xend_actors.hypervisor.base import VbdCounters, VifCounters

log = logging.getLogger(__name__)

_VBD = re.compile(r"vbd-(\d+)")
_TAP = re.compile(r"vif(\d+)\.(\d+)")


def vbds(blockstats: Iterable[Mapping[str, Any]]) -> tuple[VbdCounters, ...]:
    """A guest's vbds from its ``query-blockstats`` answer."""
    found = []
    for entry in blockstats:
        name = f"{entry.get('node-name') or ''} {entry.get('qdev') or ''}"
        match = _VBD.search(name)
        stats = entry.get("stats")
        if match is None or not isinstance(stats, dict):
            continue
        found.append(VbdCounters(int(match.group(1)), int(stats.get("rd_bytes", 0)),
                                 int(stats.get("wr_bytes", 0)),
                                 int(stats.get("rd_operations", 0)),
                                 int(stats.get("wr_operations", 0))))
    return tuple(sorted(found, key=lambda v: v.vdev))


def taps() -> dict[int, tuple[VifCounters, ...]]:
    """Every ``vif<domid>.<handle>`` tap's counters, by domain; empty if netlink fails."""
    from pyroute2 import IPRoute  # only a qemu xend that samples needs netlink here

    found: dict[int, list[VifCounters]] = {}
    try:
        with IPRoute() as ipr:
            links = ipr.get_links()
    except (OSError, XendError) as error:
        log.warning("Cannot read the taps' counters: %s", error)
        return {}
    for link in links:
        match = _TAP.fullmatch(link.get_attr("IFLA_IFNAME") or "")
        stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
        if match is None or not stats:
            continue
        found.setdefault(int(match.group(1)), []).append(VifCounters(
            int(match.group(2)), rx_bytes=stats["tx_bytes"], tx_bytes=stats["rx_bytes"],
            rx_packets=stats["tx_packets"], tx_packets=stats["rx_packets"]))
    return {domid: tuple(sorted(vifs, key=lambda v: v.handle))
            for domid, vifs in found.items()}
