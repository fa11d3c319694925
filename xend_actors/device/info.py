"""What xend reports of a domain's devices: vbd and vif info, and their SXP both ways.

The shapes are the original's (facts §4.5): ``(vbd (idx N) (vdev V) (device D) (mode M)
(dev NAME) (uname U) (node PATH) (index N))`` and ``(vif (idx N) (vif N) (mac M)
[(vifname V)] [(bridge B)] [(script S)] [(ip A)]* [(evtchn BACKEND FRONTEND)] (index N))``.
The same SXP is kept in the domain's store record, so a restarted xend knows what each
domain has attached without asking the backends.
"""

from __future__ import annotations

from dataclasses import dataclass

from xend_actors import sxp
from xend_actors.errors import BadRequest


@dataclass(frozen=True)
class VbdInfo:
    """An attached vbd: ``node`` is the host path behind ``uname``, ``device`` its number
    in the backend, ``vdev`` the number the guest sees as ``dev``."""

    idx: int
    vdev: int
    device: int
    mode: str
    dev: str
    uname: str
    node: str
    script: str = ""  # the block script that bound ``node`` (unbound on detach)

    @property
    def writable(self) -> bool:
        return "w" in self.mode

    def sxpr(self) -> sxp.Value:
        return ["vbd", ["idx", str(self.idx)], ["vdev", str(self.vdev)],
                ["device", str(self.device)], ["mode", self.mode], ["dev", self.dev],
                ["uname", self.uname], ["node", self.node], ["index", str(self.idx)],
                *([["script", self.script]] if self.script else [])]


@dataclass(frozen=True)
class VifInfo:
    """An attached vif: backend link ``vif<domid>.<idx>`` (or ``vifname``), its bridge,
    script and allowed addresses, and the event-channel pair once the frontend connects."""

    idx: int
    mac: str
    link: str
    bridge: str
    script: str
    ips: tuple[str, ...] = ()
    vifname: str = ""
    evtchn: tuple[int, int] | None = None

    def sxpr(self) -> sxp.Value:
        value: list = ["vif", ["idx", str(self.idx)], ["vif", str(self.idx)], ["mac", self.mac]]
        if self.vifname:
            value.append(["vifname", self.vifname])
        value += [["bridge", self.bridge], ["script", self.script]]
        value += [["ip", ip] for ip in self.ips]
        if self.evtchn is not None:
            value.append(["evtchn", str(self.evtchn[0]), str(self.evtchn[1])])
        value += [["index", str(self.idx)], ["link", self.link]]
        return value


DeviceInfo = VbdInfo | VifInfo


def device_info_from_sxpr(value: sxp.Value) -> DeviceInfo:
    """A device info read back from a store record; BadRequest if it is not one."""
    try:
        if sxp.name(value) == "vbd":
            return VbdInfo(
                idx=int(_text(value, "idx")), vdev=int(_text(value, "vdev")),
                device=int(_text(value, "device")), mode=_text(value, "mode"),
                dev=_text(value, "dev"), uname=_text(value, "uname"),
                node=_text(value, "node"), script=_text(value, "script", ""))
        if sxp.name(value) == "vif":
            evtchn = sxp.child(value, "evtchn")
            return VifInfo(
                idx=int(_text(value, "idx")), mac=_text(value, "mac"),
                link=_text(value, "link"), bridge=_text(value, "bridge"),
                script=_text(value, "script"),
                ips=tuple(str(ip[1]) for ip in sxp.children(value, "ip")),
                vifname=_text(value, "vifname", ""),
                evtchn=(int(evtchn[1]), int(evtchn[2])) if evtchn else None)
    except (TypeError, ValueError, IndexError) as error:
        raise BadRequest(f"bad device info {sxp.show(value)}: {error}") from None
    raise BadRequest(f"not a device info: {sxp.show(value)}")


def _text(value: sxp.Value, key: str, default: str | None = None) -> str:
    found = sxp.child_value(value, key)
    if found is None:
        if default is None:
            raise ValueError(f"no {key}")
        return default
    return str(found)
