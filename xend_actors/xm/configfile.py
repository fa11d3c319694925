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
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
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

    def __init__(self, env: dict[str, object], describe: bool = False) -> None:
        self._env = env
        self._describe = describe  # --help_config: check() lists the variables instead
        self._declared: list[_Declared] = []

    def var(self, name: str, use: str | None = None,
            check: Callable[[str, object], object] | None = None) -> None:
        self._declared.append(_Declared(name, use or "", check))

    def check(self) -> None:
        """Run every check; BadRequest naming the variable if one fails. With
        ``--help_config FILE``, print the declared variables and their use instead, as
        the original's did."""
        if self._describe:
            if self._declared:
                print(f"\nConfiguration variables for {self._env.get('xm_file')}:\n")
                for var in self._declared:
                    print(f"{var.name:<12s} {var.use}")
                print()
            return
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
    where = "no such file" if os.path.isabs(name) else \
        f"not in {', '.join(str(c.parent) for c in candidates)} (give --path DIR:DIR)"
    raise BadRequest(f"Unable to open config file: {name}: {where}")


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

def check_sxp_file(path: Path) -> None:
    """BadRequest naming ``path`` and the place if the SXP file does not parse."""
    _read_sxp_file(path)


def _read_sxp_file(path: Path) -> sxp.Value:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadRequest(f"Unable to open config file: {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BadRequest(f"Unable to open config file: {path}: not UTF-8 text") from None
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
            raise BadRequest(f"Invalid variable assignment: {assignment}: expected VAR=VAL, "
                             "VAR a Python name (letters, digits, '_', not starting "
                             "with a digit)")
        if name in _LIST_VARIABLES:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def describe_script(options: CreateOptions) -> None:
    """Run the config script as ``--help_config FILE`` does: its ``xm_vars.check()``
    prints the variables it declares, and nothing is checked or built."""
    path = find_config_file(options.defconfig or DEFAULT_DEFCONFIG, options.path)
    _run_script(path, _parse_assignments(options.assignments), describe=True)


def _run_script(path: Path, variables: dict[str, object],
                describe: bool = False) -> dict[str, object]:
    """Run the config script with ``variables`` set; its variables afterwards.
    ``describe``: for ``--help_config`` (``xm_help`` is 1)."""
    try:
        source = path.read_bytes()
    except OSError as e:
        raise BadRequest(f"Unable to open config file: {path}: {e.strerror}") from None
    env: dict[str, object] = {"__name__": "__xm_config__", "__file__": str(path),
                              "sys": sys, "os": os, "xm_file": str(path),
                              "xm_help": int(describe)}
    env.update(variables)
    env["xm_vars"] = ConfigVars(env, describe)
    try:
        exec(compile(source, str(path), "exec"), env)
    except SyntaxError as e:
        raise BadRequest(f"Error in config file {path} line {e.lineno}: {e.msg}") from None
    except XendError:
        raise
    except Exception as e:
        if describe:  # a script may need values that help gives none (the original's rule)
            return env
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

def _string(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"Invalid value for {name}: {value!r}: expected a string")


def _integer(name: str, value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
        return int(value)
    raise BadRequest(f"Invalid value for {name}: {value!r}: expected a whole number")


def _real(name: str, value: object) -> float:
    if isinstance(value, str | int | float):
        with contextlib.suppress(ValueError):
            return float(value)
    raise BadRequest(f"Invalid value for {name}: {value!r}: expected a number")


def _yes_no(name: str, value: object) -> bool:
    if value in ("yes", "no"):
        return value == "yes"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BadRequest(f"Invalid value for {name}: {value!r}: expected yes or no")


def _strings(name: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if isinstance(items, list) and all(isinstance(item, str) for item in items):
        return tuple(items)
    raise BadRequest(f"Invalid value for {name}: {value!r}: expected a string or a list "
                     "of strings")


def _var(convert: Callable[[str, object], object], metavar: str, use: str,
         default: object = None) -> Any:
    """A config variable: its converter and its help (``--help_config``) beside its default."""
    return field(default=default, metadata={"convert": convert, "metavar": metavar, "use": use})


@dataclass(frozen=True)
class _Settings:
    """The variables a config file may set (§14.3): each one's converter, help and default.
    This is the one table of them: the script's variables are read, converted and
    described from it."""

    name: str = _var(_string, "NAME", "Domain name; no other domain may have it. "
                     "Default: the config file's name.", "")
    kernel: str = _var(_string, "FILE", "Path to the kernel image (required).", "")
    ramdisk: str = _var(_string, "FILE", "Path to the ramdisk.", "")
    builder: str = _var(_string, "FUNCTION", "How the domain is built.", "linux")
    memory: int = _var(_integer, "MEMORY", "Domain memory in MB.", 128)
    maxmem: int | None = _var(_integer, "MEMORY", "Maximum domain memory in MB.")
    cpu: int | None = _var(_integer, "CPU", "CPU to run the domain on (-1: any).")
    cpu_weight: float | None = _var(_real, "WEIGHT", "The domain's cpu weight: a number "
                                    "that sets its share of the cpu.")
    console: int | None = _var(_integer, "PORT", "Console port. Default: 9600 + domain id.")
    restart: str = _var(_string, "onreboot|always|never", "Whether the domain is restarted "
                        "when it exits: onreboot (on a reboot only), always or never.", "")
    blkif: bool = _var(_yes_no, "no|yes", "Make the domain a block device backend.", False)
    netif: bool = _var(_yes_no, "no|yes", "Make the domain a network interface backend.",
                       False)
    disk: tuple[str, ...] = _var(_strings, "TYPE:DEV,VDEV,MODE[,DOM]",
                                 "A disk: host device or file DEV (phy:hda1, file:/img) "
                                 "seen by the guest as VDEV, MODE r (read-only) or w; DOM "
                                 "is the backend domain. A list, for more than one.", ())
    pci: tuple[str, ...] = _var(_strings, "BUS,DEV,FUNC", "A host PCI device, in hex "
                                "(c0,02,1a). A list, for more than one.", ())
    vif: tuple[str, ...] = _var(_strings, "mac=MAC,bridge=BRIDGE,script=SCRIPT,backend=DOM,"
                                "ip=IPADDR,vifname=NAME",
                                "A network interface; any part may be left out: a random "
                                "MAC, xend's default bridge and script, backend domain 0, "
                                "backend name vifD.N. A list, for more than one.", ())
    nics: int = _var(_integer, "NUM", "How many network interfaces: those of vif, and "
                     "plain ones up to NUM.", 1)
    root: str = _var(_string, "DEVICE", "The kernel's root= (/dev/sda1, or /dev/nfs for "
                     "an NFS root).", "")
    extra: str = _var(_string, "ARGS", "More arguments for the kernel command line.", "")
    ip: str = _var(_string, "IPADDR", "The kernel's IP interface address.", "")
    gateway: str = _var(_string, "IPADDR", "The kernel's IP gateway.", "")
    netmask: str = _var(_string, "MASK", "The kernel's IP netmask.", "")
    hostname: str = _var(_string, "NAME", "The kernel's IP host name.", "")
    interface: str = _var(_string, "INTF", "The kernel's IP interface name.", "eth0")
    dhcp: str = _var(_string, "off|dhcp", "The kernel's dhcp option.", "off")
    nfs_server: str = _var(_string, "IPADDR", "The NFS server of an NFS root.", "")
    nfs_root: str = _var(_string, "PATH", "The root directory on the NFS server.", "")


_VARIABLES = fields(_Settings)
_CONVERTERS: dict[str, Callable[[str, object], object]] = {
    var.name: var.metadata["convert"] for var in _VARIABLES}


def help_config() -> str:
    """``xm create --help_config``: every variable, its values and help, as the original's
    option help showed them (`` name=NAME``, the help and the default indented)."""
    lines = ["The config file may set these variables (VAR=VAL on the command line wins):", ""]
    for var in _VARIABLES:
        lines.append(f" {var.name}={var.metadata['metavar']}")
        lines += textwrap.wrap(var.metadata["use"], 76, initial_indent="    ",
                               subsequent_indent="    ")
        if var.default not in (None, "", (), False):
            lines.append(f"    Default {var.default}")
        lines.append("")
    lines += ["The config file sees sys, os (and os.path), xm_file (its path) and xm_vars:",
              "xm_vars.var(NAME, use=..., check=...) declares a variable of its own and",
              "xm_vars.check() checks them (with --help_config FILE, lists them).", ""]
    return "\n".join(lines)


# --- the (vm ...) ----------------------------------------------------------------------

def _vm_sxpr(settings: _Settings, default_name: str) -> list:
    """``(vm ...)`` with its fields in the order of facts §5.4."""
    if not settings.kernel:
        raise BadRequest("No kernel specified: set kernel = '/path/to/vmlinuz' in the "
                         "config file, or give kernel=FILE")
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
            raise BadRequest("Must set nfs root and nfs server: nfs_root needs nfs_server "
                             "(the NFS server's address)")
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
        raise BadRequest(f"Invalid disk specifier: {spec}: expected "
                         "TYPE:DEV,VDEV,MODE[,DOM] (phy:hda1,hda1,w)")
    uname, dev, mode, *backend = parts
    return ["vbd", ["uname", uname], ["dev", dev], ["mode", mode],
            *(["backend", domain] for domain in backend)]


def _pci(spec: str) -> list:
    """``BUS,DEV,FUNC`` in hex as ``(pci ...)``."""
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) != 3 or not all(_HEX.fullmatch(part) for part in parts):
        raise BadRequest(f"Invalid pci specifier: {spec}: expected BUS,DEV,FUNC in hex "
                         "(c0,02,1a)")
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
            raise BadRequest(f"Invalid vif specifier: {spec}: expected KEY=VALUE,... with "
                             f"keys {', '.join(_VIF_KEYS)}")
        given[key] = value
    vif: list = ["vif", ["mac", given.get("mac") or random_mac()]]
    for key in ("bridge", "script", "backend"):
        if given.get(key):
            vif.append([key, given[key]])
    vif += [["ip", address] for address in given.get("ip", "").split()]
    if given.get("vifname"):
        vif.append(["vifname", given["vifname"]])
    return vif
