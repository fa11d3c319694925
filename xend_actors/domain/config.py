"""A domain's configuration: one ``(vm ...)`` SXP read once into a frozen ``DomainConfig``.

This module owns the domain config schema (xend-facts.md §5): the fields of ``(vm ...)``,
its linux image, their defaults and the checks on them; each device is read by
``device/config.py``. Bad input is a ``BadRequest`` with the original's message, raised
before anything is created.

Decisions:

* A vif without a MAC gets a random one, written into ``DomainConfig.sxpr`` (the
  config that is stored and reported), so a restart keeps it (Δ2.0.6; 2.0.0 refused
  with ``invalid mac``).
* Stricter than the original: memory and maxmem must be whole numbers ≥ 1, cpu ≥ -1,
  cpu_weight finite and > 0, a console port 1..65535, a name at most 64 characters,
  kernel and ramdisk absolute paths of at most ``MAX_PATH``, a command line of at
  most ``MAX_CMDLINE``. Whether the kernel exists is left to the
  hypervisor driver.
* A new domain (create, restore, configure: ``check_new_domain``) must have a name
  its URL carries (``/xend/domain/<path:dom>``): a ``/`` (the original allowed it) only
  between parts that are neither empty nor ``.`` or ``..``, which a URL would lose or
  a client resolve away (``/x``, ``x/``, ``a//b``, ``..``). A record stored with such a
  name before is still read. Its maxmem may not be below its memory.
* Unknown top-level fields, and ``id`` and ``vnet`` (which 2.0.0 never acted on), are
  accepted with a warning in ``DomainConfig.warnings``; vnets are kept as given.
* A repeated single-valued field: the first one counts, as ``sxp.child_value`` reads.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from xend_actors import sxp
from xend_actors.device.config import (
    Device,
    device_sxpr,
    fill_in_mac,
    parse_device,
    shown,
    text_field,
)
from xend_actors.errors import BadRequest, NotFound
from xend_actors.hypervisor.base import LinuxImage

MAX_NAME_LENGTH = 64
MAX_PATH = 4096  # PATH_MAX
MAX_CMDLINE = 4096  # the most a Linux kernel takes on any architecture

_NAME = re.compile(r"[A-Za-z_.:/+-][A-Za-z0-9_.:/+-]*")
NAME_RULE = (f"a name is 1 to {MAX_NAME_LENGTH} letters, digits and _ . : + - /, not "
             "starting with a digit; a / only between parts that are not empty, . or ..")
_MB = "give a whole number of MB, at least 1"
_NATURAL = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")

_KNOWN_FIELDS = frozenset(
    {"name", "memory", "maxmem", "cpu", "cpu_weight", "console", "restart", "image",
     "backend", "device", "ha"}
)
_UNPROCESSED_FIELDS = frozenset({"id", "vnet"})
_BACKENDS = frozenset({"blkif", "netif"})


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
    ha: bool = False  # in a pool: restarted on another member when its host is gone


def parse_domain_config(value: sxp.Value) -> DomainConfig:
    """Check ``(vm ...)`` and convert it; BadRequest with the reason if it is not valid."""
    if not isinstance(value, list) or sxp.name(value) != "vm":
        got = shown(value)
        raise BadRequest("Configuration error: expected (vm ...), got "
                         + (got if len(got) <= 40 else got[:40] + "..."))
    vm = copy.deepcopy(value)  # MACs are filled in here; the caller's value stays as it was
    name = _name(vm)
    memory = _memory(vm)
    maxmem = _optional(vm, "maxmem", _natural, "invalid maxmem: {}: " + _MB)
    cpu = _optional(vm, "cpu", _cpu, "invalid cpu {}: give -1 (any cpu) or a cpu "
                    "number (0, 1, ...)", default=-1)
    cpu_weight = _optional(vm, "cpu_weight", _weight, "invalid cpu weight {}: give a "
                           "number greater than 0", default=1.0)
    console = _optional(vm, "console", _port, "invalid console:{}: give a port number "
                        "1..65535")
    restart = _optional(vm, "restart", RestartMode, "invalid restart mode: {}: use onreboot, "
                        "always or never",
                        default=RestartMode.ONREBOOT)
    ha = _optional(vm, "ha", _yes_no, "invalid ha {}: give yes or no", default=False)
    image = _image(vm)
    backends = frozenset(_backend(element) for element in sxp.children(vm, "backend"))
    devices = []
    for element in sxp.children(vm, "device"):
        device = sxp.child0(element)
        if isinstance(device, list) and sxp.name(device) == "vif":
            fill_in_mac(device)
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
        ha=ha,
    )


def check_new_domain(config: DomainConfig) -> DomainConfig:
    """``config`` if a new domain may have it: a name its URL carries and a maxmem not
    below its memory; else a BadRequest saying why."""
    name = config.name
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise BadRequest(f"invalid vm name {name!r}: {NAME_RULE}")
    if config.maxmem_mb is not None and config.maxmem_mb < config.memory_mb:
        raise BadRequest(f"invalid maxmem: {config.maxmem_mb} MB is less than the "
                         f"memory, {config.memory_mb} MB")
    return config


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
        raise BadRequest(f"missing vm name: give (name NAME); {NAME_RULE}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest(f"invalid vm name {shown(name)[:80]!r}: {NAME_RULE}")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"invalid vm name {name[:20]!r}...: longer than "
                         f"{MAX_NAME_LENGTH} characters; {NAME_RULE}")
    return name


def _memory(vm: list) -> int:
    memory = sxp.child_value(vm, "memory")
    if memory is None:
        raise BadRequest("missing memory: give (memory MB)")
    return _convert(memory, _natural, "invalid memory: {}: " + _MB)


def _optional(vm: list, key: str, convert: Any, error: str, default: Any = None) -> Any:
    value = sxp.child_value(vm, key)
    return default if value is None else _convert(value, convert, error)


def _convert(value: object, convert: Any, error: str) -> Any:
    """``convert(value)`` for a string value; BadRequest ``error`` (``{}`` = the value) if not."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return convert(value)
    raise BadRequest(error.format(shown(value)))


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


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise ValueError(text)
    return text == "yes"


def _port(text: str) -> int:
    if not _NATURAL.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


def _image(vm: list) -> LinuxImageConfig:
    image = sxp.child_value(vm, "image")
    if image is None:
        raise BadRequest("missing image: give (image (linux (kernel /path/to/vmlinuz)))")
    if sxp.name(image) != "linux":
        raise BadRequest(f"unknown image type: {shown(sxp.name(image))}: only linux is "
                         "known: (image (linux (kernel /path/to/vmlinuz)))")
    kernel = text_field(image, "kernel")
    if not kernel:
        raise BadRequest("missing kernel: give (kernel /path/to/vmlinuz) in (image (linux "
                         "...))")
    if not kernel.startswith("/"):
        raise BadRequest(f"kernel must be an absolute path: {kernel}")
    ramdisk = text_field(image, "ramdisk")
    if ramdisk and not ramdisk.startswith("/"):
        raise BadRequest(f"ramdisk must be an absolute path: {ramdisk}")
    for what, path in (("kernel", kernel), ("ramdisk", ramdisk)):
        if len(path) > MAX_PATH:
            raise BadRequest(f"{what} path longer than {MAX_PATH} characters")
    config = LinuxImageConfig(kernel, ramdisk, text_field(image, "ip"),
                              text_field(image, "root"), text_field(image, "args"))
    if len(config.cmdline) > MAX_CMDLINE:
        raise BadRequest(f"kernel command line (ip, root and args) longer than "
                         f"{MAX_CMDLINE} characters")
    return config


def _backend(element: sxp.Value) -> str:
    kind = sxp.name(sxp.child0(element))
    if not isinstance(kind, str) or kind not in _BACKENDS:
        raise BadRequest(f"invalid backend type:{shown(kind)}: use (backend (blkif)) or "
                         "(backend (netif))")
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
            warnings.append(f"unknown config field ignored: {shown(item)}")
    return warnings


