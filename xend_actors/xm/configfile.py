"""What ``xm create`` does before it talks to xend: config file and ``VAR=VAL`` to ``(vm ...)``.

This module owns xm's config files (xend-facts.md §14.3, §5.4): finding one along the
search path, running it, and turning its variables into the ``(vm ...)`` SXP in the
field order the original printed. An xm config file is a Python script that sets
variables (``memory = 64``); ``VAR=VAL`` assignments on the command line are set
before it runs and win over what it sets. ``-F FILE`` instead names an SXP file that
is sent as it is.

The script is the user's own file, run with the user's privileges by the user's own
``xm`` process, as the original did with ``execfile``: it can do anything the user
can, so it is not sandboxed. It sees ``sys``, ``os`` (and ``os.path``), ``xm_file``
and ``xm_vars`` (``ConfigVars``) for declaring and checking variables of its own.

Decisions:

* A vif without ``mac=``, and every vif beyond the ``vif`` list up to ``nics``, gets a
  random MAC (2.0.0 sent ``(mac 'None')`` for the first kind, §15 item 2).
* ``nfs_root`` with an empty ``extra`` gives ``nfsroot=S:R`` without the trailing
  space the original left.
* An error in the script is one line, ``Error in config file F line N: ...``, not a
  traceback; numbers that do not convert say which variable.
* Every atom of the result is a string, as the parser would have produced.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xend_actors import sxp
from xend_actors.errors import BadRequest, XendError
from xend_actors.mac import random_mac

DEFAULT_DEFCONFIG = "xmdefconfig"
DEFAULT_PATH = ".:/etc/xen"
DUMMY_NFS_SERVER = "1.2.3.4"  # the kernel's ip= needs a server field even without NFS

_LIST_VARIABLES = frozenset({"disk", "pci", "vif"})
_VIF_KEYS = ("mac", "bridge", "script", "backend", "ip", "vifname")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class CreateOptions:
    """What ``xm create`` was told: which config, where to look for it, and ``VAR=VAL``s."""

    defconfig: str | None = DEFAULT_DEFCONFIG  # Python config script (-f, or a bare word)
    config: Path | None = None  # SXP config file (-F), used as is; wins over defconfig
    path: str = DEFAULT_PATH  # where a relative defconfig is looked for (--path)
    assignments: tuple[str, ...] = ()  # VAR=VAL


@dataclass
class _Declared:
    name: str
    use: str
    check: Callable[[str, object], object] | None


class ConfigVars:
    """``xm_vars`` in a config script: declare variables of the script's own, then check them.

    ``var(name, use=..., check=...)`` declares one; ``check()`` calls each
    ``check(name, value)`` (value None if unset) and sets the variable to what it
    returns, so ``vmid=3`` on the command line becomes the int 3 in the script.
    """

    def __init__(self, env: dict[str, object]) -> None:
        self._env = env
        self._declared: list[_Declared] = []

    def var(self, name: str, use: str | None = None,
            check: Callable[[str, object], object] | None = None) -> None:
        self._declared.append(_Declared(name, use or "", check))

    def check(self) -> None:
        """Run every check; BadRequest naming the variable if one fails."""
        for var in self._declared:
            if var.check is None:
                continue
            value = self._env.get(var.name)
            try:
                self._env[var.name] = var.check(var.name, value)
            except Exception:
                use = f" ({var.use})" if var.use else ""
                if value is None:
                    raise BadRequest(
                        f"Missing variable {var.name}: give {var.name}=VALUE{use}"
                    ) from None
                raise BadRequest(f"Invalid value for {var.name}: {value}{use}") from None


def find_config_file(name: str, search_path: str) -> Path:
    """``name`` itself if absolute, else the first ``DIR/name`` along ``DIR:DIR:...``."""
    if os.path.isabs(name):
        candidates = [Path(name)]
    else:
        candidates = [Path(folder or ".") / name for folder in search_path.split(":")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BadRequest(f"Unable to open config file: {name}")


def build_vm_sxpr(options: CreateOptions) -> sxp.Value:
    """The ``(vm ...)`` that ``xm create`` sends: the ``-F`` file's, or the script's."""
    if options.config is not None:
        return _read_sxp_file(options.config)
    defconfig = options.defconfig or DEFAULT_DEFCONFIG
    path = find_config_file(defconfig, options.path)
    given = _parse_assignments(options.assignments)
    env = _run_script(path, given)
    taken: dict[str, Any] = {name: value for name, value in env.items()
                             if name in _CONVERTERS and isinstance(value, str | list | int | float)}
    taken.update((name, value) for name, value in given.items() if name in _CONVERTERS)
    converted: dict[str, Any] = {name: _CONVERTERS[name](name, value)
                                 for name, value in taken.items()}
    settings = _Settings(**converted)
    return _vm_sxpr(settings, default_name=Path(defconfig).name)


# --- reading the files -----------------------------------------------------------------

def _read_sxp_file(path: Path) -> sxp.Value:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise BadRequest(f"Unable to open config file: {path}") from None
    try:
        return sxp.parse(text)
    except sxp.ParseError as e:
        raise BadRequest(f"Error in config file {path} {e.message}") from None


def _parse_assignments(assignments: tuple[str, ...]) -> dict[str, Any]:
    """``VAR=VAL`` as variables: strings, or lists of them for the repeatable ones."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not name.isidentifier():
            raise BadRequest(f"Invalid variable assignment: {assignment}")
        if name in _LIST_VARIABLES:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def _run_script(path: Path, variables: dict[str, object]) -> dict[str, object]:
    """Run the config script with ``variables`` set; its variables afterwards."""
    try:
        source = path.read_bytes()
    except OSError as e:
        raise BadRequest(f"Unable to open config file: {path}: {e.strerror}") from None
    env: dict[str, object] = {"__name__": "__xm_config__", "__file__": str(path),
                              "sys": sys, "os": os, "xm_file": str(path), "xm_help": 0}
    env.update(variables)
    env["xm_vars"] = ConfigVars(env)
    try:
        exec(compile(source, str(path), "exec"), env)
    except SyntaxError as e:
        raise BadRequest(f"Error in config file {path} line {e.lineno}: {e.msg}") from None
    except XendError:
        raise
    except Exception as e:
        where = _line_in(e, path)
        raise BadRequest(
            f"Error in config file {path}{where}: {type(e).__name__}: {e}"
        ) from None
    return env


def _line_in(error: BaseException, path: Path) -> str:
    """`` line N`` for the deepest line of ``path`` where ``error`` passed, else ''."""
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if frame.filename == str(path)]
    return f" line {lines[-1]}" if lines else ""


# --- the variables ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Settings:
    """The variables of §14.3 with their defaults, converted."""

    name: str = ""
    kernel: str = ""
    ramdisk: str = ""
    builder: str = "linux"
    memory: int = 128
    maxmem: int | None = None
    cpu: int | None = None
    cpu_weight: float | None = None
    console: int | None = None
    restart: str = ""
    blkif: bool = False
    netif: bool = False
    disk: tuple[str, ...] = ()
    pci: tuple[str, ...] = ()
    vif: tuple[str, ...] = ()
    nics: int = 1
    root: str = ""
    extra: str = ""
    ip: str = ""
    gateway: str = ""
    netmask: str = ""
    hostname: str = ""
    interface: str = "eth0"
    dhcp: str = "off"
    nfs_server: str = ""
    nfs_root: str = ""


def _invalid(name: str, value: object) -> BadRequest:
    return BadRequest(f"Invalid value for {name}: {value!r}")


def _string(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _invalid(name, value)


def _integer(name: str, value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
        return int(value)
    raise _invalid(name, value)


def _real(name: str, value: object) -> float:
    if isinstance(value, str | int | float):
        with contextlib.suppress(ValueError):
            return float(value)
    raise _invalid(name, value)


def _yes_no(name: str, value: object) -> bool:
    if value in ("yes", "no"):
        return value == "yes"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _invalid(name, value)


def _strings(name: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if isinstance(items, list) and all(isinstance(item, str) for item in items):
        return tuple(items)
    raise _invalid(name, value)


_CONVERTERS: dict[str, Callable[[str, object], object]] = {
    "name": _string, "kernel": _string, "ramdisk": _string, "builder": _string,
    "memory": _integer, "maxmem": _integer, "cpu": _integer, "cpu_weight": _real,
    "console": _integer, "restart": _string, "blkif": _yes_no, "netif": _yes_no,
    "disk": _strings, "pci": _strings, "vif": _strings, "nics": _integer,
    "root": _string, "extra": _string, "ip": _string, "gateway": _string,
    "netmask": _string, "hostname": _string, "interface": _string, "dhcp": _string,
    "nfs_server": _string, "nfs_root": _string,
}


# --- the (vm ...) ----------------------------------------------------------------------

def _vm_sxpr(settings: _Settings, default_name: str) -> list:
    """``(vm ...)`` with its fields in the order of facts §5.4."""
    if not settings.kernel:
        raise BadRequest("No kernel specified")
    vm: list = ["vm", ["name", settings.name or default_name], ["memory", str(settings.memory)]]
    if settings.maxmem:
        vm.append(["maxmem", str(settings.maxmem)])
    if settings.cpu is not None:
        vm.append(["cpu", str(settings.cpu)])
    if settings.cpu_weight is not None:
        vm.append(["cpu_weight", sxp.show(settings.cpu_weight)])
    if settings.blkif:
        vm.append(["backend", ["blkif"]])
    if settings.netif:
        vm.append(["backend", ["netif"]])
    if settings.restart:
        vm.append(["restart", settings.restart])
    if settings.console:
        vm.append(["console", str(settings.console)])
    vm.append(["image", _image(settings)])
    devices = [*map(_vbd, settings.disk), *map(_pci, settings.pci), *_vifs(settings)]
    vm += [["device", device] for device in devices]
    return vm


def _image(settings: _Settings) -> list:
    image: list = [settings.builder, ["kernel", os.path.abspath(settings.kernel)]]
    if settings.ramdisk:
        image.append(["ramdisk", os.path.abspath(settings.ramdisk)])
    if settings.ip or settings.dhcp != "off":
        fields = (settings.ip, settings.nfs_server or DUMMY_NFS_SERVER, settings.gateway,
                  settings.netmask, settings.hostname, settings.interface, settings.dhcp)
        image.append(["ip", _strip_prefix("ip=", ":".join(fields))])
    if settings.root:
        image.append(["root", _strip_prefix("root=", settings.root)])
    args = settings.extra
    if settings.nfs_root:
        if not settings.nfs_server:
            raise BadRequest("Must set nfs root and nfs server")
        nfsroot = f"nfsroot={settings.nfs_server}:{settings.nfs_root}"
        args = f"{nfsroot} {args}" if args else nfsroot
    if args:
        image.append(["args", args])
    return image


def _strip_prefix(prefix: str, text: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text


def _vbd(spec: str) -> list:
    """``TYPE:DEV,VDEV,MODE[,DOM]`` as ``(vbd ...)``."""
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) not in (3, 4) or not all(parts):
        raise BadRequest(f"Invalid disk specifier: {spec}")
    uname, dev, mode, *backend = parts
    return ["vbd", ["uname", uname], ["dev", dev], ["mode", mode],
            *(["backend", domain] for domain in backend)]


def _pci(spec: str) -> list:
    """``BUS,DEV,FUNC`` in hex as ``(pci ...)``."""
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) != 3 or not all(_HEX.fullmatch(part) for part in parts):
        raise BadRequest(f"Invalid pci specifier: {spec}")
    return ["pci", *([key, "0x" + part] for key, part in zip(("bus", "dev", "func"), parts,
                                                            strict=True))]


def _vifs(settings: _Settings) -> list[list]:
    """A ``(vif ...)`` per ``vif`` entry, then plain ones up to ``nics``."""
    specs = [*settings.vif, *[""] * (settings.nics - len(settings.vif))]
    return [_vif(spec) for spec in specs]


def _vif(spec: str) -> list:
    """``mac=M,bridge=B,script=S,backend=D,ip=A,vifname=N`` (any, in any order) as ``(vif ...)``."""
    given: dict[str, str] = {}
    for part in filter(None, (part.strip() for part in spec.split(","))):
        key, equals, value = (text.strip() for text in part.partition("="))
        if not equals or key not in _VIF_KEYS:
            raise BadRequest(f"Invalid vif specifier: {spec}")
        given[key] = value
    vif: list = ["vif", ["mac", given.get("mac") or random_mac()]]
    for key in ("bridge", "script", "backend"):
        if given.get(key):
            vif.append([key, given[key]])
    vif += [["ip", address] for address in given.get("ip", "").split()]
    if given.get("vifname"):
        vif.append(["vifname", given["vifname"]])
    return vif
