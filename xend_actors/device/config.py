"""The device configs of a domain: ``(vbd ...)``, ``(vif ...)`` and ``(pci ...)`` read into
frozen values, and written back (facts §5.3).

Bad input is a ``BadRequest`` with the original's message, raised before anything is
attached. A vif without a MAC gets a random one (``mac.random_mac``, facts §5.5).
Stricter than the original: a vbd mode is one of ``r w r! w!``, pci numbers are in range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xend_actors import sxp
from xend_actors.config import script_words
from xend_actors.errors import BadRequest
from xend_actors.mac import random_mac

MAX_VIFNAME_LENGTH = 15  # Linux's IFNAMSIZ less the terminating NUL

_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")
_VBD_MODE = re.compile(r"[rw]!?")
_VIFNAME = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_VIFNAME_LENGTH}}}")
_PCI_LIMITS = {"bus": 0xFF, "dev": 0x1F, "func": 0x7}


@dataclass(frozen=True)
class VbdConfig:
    """``(vbd ...)``: a dom0 block device (``uname``) the guest sees as ``dev``."""

    uname: str
    dev: str
    mode: str = "r"
    backend: int = 0

    @property
    def writable(self) -> bool:
        return "w" in self.mode

    @property
    def shared_ok(self) -> bool:
        """``!`` in the mode: skip the check that nobody else writes to the device."""
        return "!" in self.mode


@dataclass(frozen=True)
class VifConfig:
    """``(vif ...)``: a virtual network interface; ``mac`` is lower-case ``%02x`` pairs."""

    mac: str
    bridge: str = ""
    script: str = ""
    ips: tuple[str, ...] = ()
    backend: int = 0
    vifname: str = ""


@dataclass(frozen=True)
class PciConfig:
    """``(pci ...)``: a host PCI function handed to the domain."""

    bus: int
    dev: int
    func: int


Device = VbdConfig | VifConfig | PciConfig


def parse_device(value: sxp.Value) -> Device:
    """One ``(vbd ...)``, ``(vif ...)`` or ``(pci ...)``; a vif without a MAC gets a random one."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"invalid device {shown(value)[:80]}: expected (vbd ...), (vif ...) "
                         "or (pci ...)")
    kind = sxp.name(value)
    if kind == "vbd":
        return _vbd(value)
    if kind == "vif":
        return _vif(value)
    if kind == "pci":
        return _pci(value)
    raise BadRequest(f"unknown device type: {shown(kind)}: use vbd, vif or pci")


def device_sxpr(device: Device) -> sxp.Value:
    """The SXP of a device, which ``parse_device`` reads back to an equal device."""
    if isinstance(device, VbdConfig):
        config = ["vbd", ["uname", device.uname], ["dev", device.dev], ["mode", device.mode]]
        if device.backend:
            config.append(["backend", str(device.backend)])
        return config
    if isinstance(device, VifConfig):
        config = ["vif", ["mac", device.mac]]
        config += [[key, value] for key, value in
                   (("bridge", device.bridge), ("script", device.script)) if value]
        if device.backend:
            config.append(["backend", str(device.backend)])
        config += [["ip", ip] for ip in device.ips]
        if device.vifname:
            config.append(["vifname", device.vifname])
        return config
    return ["pci", ["bus", f"0x{device.bus:02x}"], ["dev", f"0x{device.dev:02x}"],
            ["func", f"0x{device.func:x}"]]


# --- devices ---------------------------------------------------------------------------

def _vbd(config: list) -> VbdConfig:
    uname = text_field(config, "uname")
    if not uname:
        raise BadRequest("vbd: Missing uname")
    dev = text_field(config, "dev")
    if not dev:
        raise BadRequest("vbd: Missing dev")
    mode = text_field(config, "mode") or "r"
    if not _VBD_MODE.fullmatch(mode):
        raise BadRequest(f"invalid vbd mode: {mode}: use r, w, r! or w! (! shares a "
                         "disk another domain writes to)")
    return VbdConfig(uname, dev, mode, _backend_domain(config, "vbd"))


def _vif(config: list) -> VifConfig:
    mac = text_field(config, "mac") or random_mac()
    if not _MAC.fullmatch(mac):
        raise BadRequest(f"invalid mac: {mac}: use six hex bytes separated by ':' "
                         "(aa:00:00:12:34:56)")
    vifname = text_field(config, "vifname")
    if vifname and not _VIFNAME.fullmatch(vifname):
        raise BadRequest(f"invalid vifname: {vifname}: use 1 to {MAX_VIFNAME_LENGTH} "
                         "letters, digits and _ . : -")
    ips = []
    for element in sxp.children(config, "ip"):
        ip = sxp.child0(element)
        if not isinstance(ip, str) or not ip:
            raise BadRequest(f"vif: invalid ip: {shown(ip)}: give an address or a net "
                             "(10.0.0.5, 10.0.1.0/24), one per (ip ...)")
        ips.append(ip)
    script = text_field(config, "script")
    if script:
        try:
            script_words(script)
        except ValueError as e:
            raise BadRequest(f"vif: invalid script: {e}") from None
    return VifConfig(
        mac=":".join(f"{int(octet, 16):02x}" for octet in mac.split(":")),
        bridge=text_field(config, "bridge"),
        script=script,
        ips=tuple(ips),
        backend=_backend_domain(config, "vif"),
        vifname=vifname,
    )


def fill_in_mac(vif: list) -> None:
    """Give a vif without a MAC a random one, where xm would have put it: first."""
    if text_field(vif, "mac"):
        return
    start = len(vif) - len(sxp.children(vif))
    others = [item for item in vif[start:] if not (isinstance(item, list) and item[:1] == ["mac"])]
    vif[start:] = [["mac", random_mac()], *others]


def _pci(config: list) -> PciConfig:
    numbers = {}
    for key, limit in _PCI_LIMITS.items():
        text = text_field(config, key)
        if not text:
            raise BadRequest(f"pci: Missing {key}: give (bus B) (dev D) (func F)")
        number = _number(text)
        if number is None or number > limit:
            raise BadRequest(f"pci: invalid {key}: {text}: give a number 0..{limit:#x}, "
                             "decimal or 0x hex")
        numbers[key] = number
    return PciConfig(**numbers)


def _backend_domain(config: list, kind: str) -> int:
    text = text_field(config, "backend")
    if not text:
        return 0
    number = _number(text)
    if number is None:
        raise BadRequest(f"{kind}: invalid backend: {text}: give the backend's domain id, "
                         "a whole number")
    return number



# --- helpers shared with the domain config -----------------------------------------

def text_field(element: list, key: str) -> str:
    """The string value of child ``key``; '' if absent; BadRequest if it is a list."""
    value = sxp.child_value(element, key, "")
    if not isinstance(value, str):
        raise BadRequest(f"invalid {key}: {shown(value)[:80]}: give one value, not a list")
    return value


def _number(text: str) -> int | None:
    """A whole number ≥ 0 written in decimal or ``0x`` hex; None if ``text`` is not one."""
    if not _NUMBER.fullmatch(text) or len(text) > 20:  # int() refuses thousands of digits
        return None
    return int(text, 16) if text[:2].lower() == "0x" else int(text)


def shown(value: object) -> str:
    """``value`` for an error message."""
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else sxp.show(value)
