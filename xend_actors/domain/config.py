"""A domain's configuration: one ``(vm ...)`` SXP read once into a frozen ``DomainConfig``.

This module owns the domain config schema (xend-facts.md §5): the fields of ``(vm ...)``,
its linux image and its devices, their defaults and the checks on them. Bad input is a
``BadRequest`` with the original's message, raised before anything is created. It
also owns the random MAC rule (§5.5), shared with ``xm create``.

Decisions:

* A vif without a MAC gets a random one, written into ``DomainConfig.sxpr`` (the
  config that is stored and reported), so a restart keeps it (Δ2.0.6; 2.0.0 refused
  with ``invalid mac``).
* Stricter than the original: memory and maxmem must be whole numbers ≥ 1, cpu ≥ -1,
  cpu_weight finite and > 0, a console port 1..65535, a name at most 64 characters,
  kernel and ramdisk absolute paths, a vbd mode one of ``r w r! w!``, pci numbers in
  range. Whether the kernel exists is left to the hypervisor driver.
* Unknown top-level fields, and ``id`` and ``vnet`` (which 2.0.0 never acted on), are
  accepted with a warning in ``DomainConfig.warnings``; vnets are kept as given.
* A repeated single-valued field: the first one counts, as ``sxp.child_value`` reads.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from xend_actors import sxp
from xend_actors.errors import BadRequest, NotFound
from xend_actors.hypervisor.base import LinuxImage

MAX_NAME_LENGTH = 64
MAX_VIFNAME_LENGTH = 15  # Linux's IFNAMSIZ less the terminating NUL

_NAME = re.compile(r"[A-Za-z_.:/+-][A-Za-z0-9_.:/+-]*")
_NATURAL = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")
_VBD_MODE = re.compile(r"[rw]!?")
_VIFNAME = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_VIFNAME_LENGTH}}}")

_KNOWN_FIELDS = frozenset(
    {"name", "memory", "maxmem", "cpu", "cpu_weight", "console", "restart", "image",
     "backend", "device"}
)
_UNPROCESSED_FIELDS = frozenset({"id", "vnet"})
_BACKENDS = frozenset({"blkif", "netif"})
_PCI_LIMITS = {"bus": 0xFF, "dev": 0x1F, "func": 0x7}


class RestartMode(Enum):
    """When a domain that stopped is started again (facts §7.4)."""

    ONREBOOT = "onreboot"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class LinuxImageConfig:
    """``(image (linux ...))``: what to boot and the kernel command line's parts."""

    kernel: str
    ramdisk: str = ""
    ip: str = ""
    root: str = ""
    args: str = ""

    @property
    def cmdline(self) -> str:
        """The kernel command line as the original built it, leading spaces included."""
        parts = (("ip=", self.ip), ("root=", self.root), ("", self.args))
        return "".join(f" {prefix}{value}" for prefix, value in parts if value)

    def image(self) -> LinuxImage:
        return LinuxImage(self.kernel, self.ramdisk, self.cmdline)


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


@dataclass(frozen=True)
class DomainConfig:
    """A validated ``(vm ...)``; ``sxpr`` is the config as stored and reported.

    ``maxmem_mb`` None means "same as memory"; ``cpu`` -1 lets the hypervisor choose;
    ``console_port`` None means the console port base plus the domain id.
    """

    name: str
    memory_mb: int
    maxmem_mb: int | None
    cpu: int
    cpu_weight: float
    console_port: int | None
    restart: RestartMode
    image: LinuxImageConfig
    backends: frozenset[str]
    devices: tuple[Device, ...]
    vnets: tuple[sxp.Value, ...] = field(hash=False)  # kept as given: 2.0.0 never used them
    sxpr: sxp.Value = field(hash=False)
    warnings: tuple[str, ...] = ()


def random_mac() -> str:
    """A MAC in the unassigned ex-DEC OUI ``aa:00:00``, 4th byte below 0x80 (facts §5.5)."""
    octets = (0xAA, 0x00, 0x00, random.randint(0x00, 0x7F),
              random.randint(0x00, 0xFF), random.randint(0x00, 0xFF))
    return ":".join(f"{octet:02x}" for octet in octets)


def parse_domain_config(value: sxp.Value) -> DomainConfig:
    """Check ``(vm ...)`` and convert it; BadRequest with the reason if it is not valid."""
    if not isinstance(value, list) or sxp.name(value) != "vm":
        raise BadRequest("Configuration error: expected (vm ...)")
    vm = copy.deepcopy(value)  # MACs are filled in here; the caller's value stays as it was
    name = _name(vm)
    memory = _memory(vm)
    maxmem = _optional(vm, "maxmem", _natural, "invalid maxmem: {}")
    cpu = _optional(vm, "cpu", _cpu, "invalid cpu", default=-1)
    cpu_weight = _optional(vm, "cpu_weight", _weight, "invalid cpu weight", default=1.0)
    console = _optional(vm, "console", _port, "invalid console:{}")
    restart = _optional(vm, "restart", RestartMode, "invalid restart mode: {}",
                        default=RestartMode.ONREBOOT)
    image = _image(vm)
    backends = frozenset(_backend(element) for element in sxp.children(vm, "backend"))
    devices = []
    for element in sxp.children(vm, "device"):
        device = sxp.child0(element)
        if isinstance(device, list) and sxp.name(device) == "vif":
            _fill_in_mac(device)
        devices.append(parse_device(device))
    return DomainConfig(
        name=name,
        memory_mb=memory,
        maxmem_mb=maxmem,
        cpu=cpu,
        cpu_weight=cpu_weight,
        console_port=console,
        restart=restart,
        image=image,
        backends=backends,
        devices=tuple(devices),
        vnets=tuple(sxp.children(vm, "vnet")),
        sxpr=vm,
        warnings=tuple(_warnings(vm)),
    )


def parse_device(value: sxp.Value) -> Device:
    """One ``(vbd ...)``, ``(vif ...)`` or ``(pci ...)``; a vif without a MAC gets a random one."""
    if not isinstance(value, list) or not value:
        raise BadRequest("invalid device")
    kind = sxp.name(value)
    if kind == "vbd":
        return _vbd(value)
    if kind == "vif":
        return _vif(value)
    if kind == "pci":
        return _pci(value)
    raise BadRequest(f"unknown device type: {_shown(kind)}")


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


def with_device(config: DomainConfig, device: Device) -> DomainConfig:
    """``config`` with ``(device <device>)`` appended, as ``device_create`` records it."""
    return parse_domain_config([*config.sxpr, ["device", device_sxpr(device)]])


def without_device(config: DomainConfig, kind: type[Device], index: int,
                   replacement: Device | None = None) -> DomainConfig:
    """``config`` without (or with ``replacement`` for) its ``index``-th device of ``kind``."""
    vm, seen = list(config.sxpr), -1
    for at, element in enumerate(vm):
        if isinstance(element, list) and sxp.name(element) == "device" and \
                isinstance(parse_device(sxp.child0(element)), kind):
            seen += 1
            if seen == index:
                if replacement is None:
                    del vm[at]
                else:
                    vm[at] = ["device", device_sxpr(replacement)]
                return parse_domain_config(vm)
    raise NotFound(f"no {kind.__name__.removesuffix('Config').lower()} {index}")


# --- (vm ...) fields -------------------------------------------------------------------

def _name(vm: list) -> str:
    name = sxp.child_value(vm, "name")
    if name is None or name == "":
        raise BadRequest("missing vm name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest("invalid vm name")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"invalid vm name: longer than {MAX_NAME_LENGTH} characters")
    return name


def _memory(vm: list) -> int:
    memory = sxp.child_value(vm, "memory")
    if memory is None:
        raise BadRequest("missing memory")
    return _convert(memory, _natural, "invalid memory: {}")


def _optional(vm: list, key: str, convert: Any, error: str, default: Any = None) -> Any:
    value = sxp.child_value(vm, key)
    return default if value is None else _convert(value, convert, error)


def _convert(value: object, convert: Any, error: str) -> Any:
    """``convert(value)`` for a string value; BadRequest ``error`` (``{}`` = the value) if not."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return convert(value)
    raise BadRequest(error.format(_shown(value)))


def _natural(text: str) -> int:
    """A whole number ≥ 1."""
    if not _NATURAL.fullmatch(text) or int(text) < 1:
        raise ValueError(text)
    return int(text)


def _cpu(text: str) -> int:
    if not _INTEGER.fullmatch(text) or int(text) < -1:
        raise ValueError(text)
    return int(text)


def _weight(text: str) -> float:
    weight = float(text)
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(text)
    return weight


def _port(text: str) -> int:
    if not _NATURAL.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


def _image(vm: list) -> LinuxImageConfig:
    image = sxp.child_value(vm, "image")
    if image is None:
        raise BadRequest("missing image")
    if sxp.name(image) != "linux":
        raise BadRequest(f"unknown image type: {_shown(sxp.name(image))}")
    kernel = _text(image, "kernel")
    if not kernel:
        raise BadRequest("missing kernel")
    if not kernel.startswith("/"):
        raise BadRequest(f"kernel must be an absolute path: {kernel}")
    ramdisk = _text(image, "ramdisk")
    if ramdisk and not ramdisk.startswith("/"):
        raise BadRequest(f"ramdisk must be an absolute path: {ramdisk}")
    return LinuxImageConfig(kernel, ramdisk, _text(image, "ip"), _text(image, "root"),
                            _text(image, "args"))


def _backend(element: sxp.Value) -> str:
    kind = sxp.name(sxp.child0(element))
    if not isinstance(kind, str) or kind not in _BACKENDS:
        raise BadRequest(f"invalid backend type:{_shown(kind)}")
    return kind


def _warnings(vm: list) -> list[str]:
    warnings = []
    for item in sxp.children(vm):
        name = sxp.name(item)
        key = name if isinstance(item, list) and isinstance(name, str) else None  # atoms aren't
        if key in _KNOWN_FIELDS:
            continue
        if key in _UNPROCESSED_FIELDS:
            warnings.append(f"config field not processed: {key}")
        else:
            warnings.append(f"unknown config field ignored: {_shown(item)}")
    return warnings


# --- devices ---------------------------------------------------------------------------

def _vbd(config: list) -> VbdConfig:
    uname = _text(config, "uname")
    if not uname:
        raise BadRequest("vbd: Missing uname")
    dev = _text(config, "dev")
    if not dev:
        raise BadRequest("vbd: Missing dev")
    mode = _text(config, "mode") or "r"
    if not _VBD_MODE.fullmatch(mode):
        raise BadRequest(f"invalid vbd mode: {mode}")
    return VbdConfig(uname, dev, mode, _backend_domain(config, "vbd"))


def _vif(config: list) -> VifConfig:
    mac = _text(config, "mac") or random_mac()
    if not _MAC.fullmatch(mac):
        raise BadRequest(f"invalid mac: {mac}")
    vifname = _text(config, "vifname")
    if vifname and not _VIFNAME.fullmatch(vifname):
        raise BadRequest(f"invalid vifname: {vifname}")
    ips = []
    for element in sxp.children(config, "ip"):
        ip = sxp.child0(element)
        if not isinstance(ip, str) or not ip:
            raise BadRequest(f"vif: invalid ip: {_shown(ip)}")
        ips.append(ip)
    return VifConfig(
        mac=":".join(f"{int(octet, 16):02x}" for octet in mac.split(":")),
        bridge=_text(config, "bridge"),
        script=_text(config, "script"),
        ips=tuple(ips),
        backend=_backend_domain(config, "vif"),
        vifname=vifname,
    )


def _fill_in_mac(vif: list) -> None:
    """Give a vif without a MAC a random one, where xm would have put it: first."""
    if _text(vif, "mac"):
        return
    start = len(vif) - len(sxp.children(vif))
    others = [item for item in vif[start:] if not (isinstance(item, list) and item[:1] == ["mac"])]
    vif[start:] = [["mac", random_mac()], *others]


def _pci(config: list) -> PciConfig:
    numbers = {}
    for key, limit in _PCI_LIMITS.items():
        text = _text(config, key)
        if not text:
            raise BadRequest(f"pci: Missing {key}")
        number = _number(text)
        if number is None or number > limit:
            raise BadRequest(f"pci: invalid {key}: {text}")
        numbers[key] = number
    return PciConfig(**numbers)


def _backend_domain(config: list, kind: str) -> int:
    text = _text(config, "backend")
    if not text:
        return 0
    number = _number(text)
    if number is None:
        raise BadRequest(f"{kind}: invalid backend: {text}")
    return number


# --- helpers ---------------------------------------------------------------------------

def _text(element: list, key: str) -> str:
    """The string value of child ``key``; '' if absent; BadRequest if it is a list."""
    value = sxp.child_value(element, key, "")
    if not isinstance(value, str):
        raise BadRequest(f"invalid {key}: {_shown(value)}")
    return value


def _number(text: str) -> int | None:
    """A whole number ≥ 0 written in decimal or ``0x`` hex; None if ``text`` is not one."""
    if not _NUMBER.fullmatch(text) or len(text) > 20:  # int() refuses thousands of digits
        return None
    return int(text, 16) if text[:2].lower() == "0x" else int(text)


def _shown(value: object) -> str:
    """``value`` for an error message."""
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else sxp.show(value)
