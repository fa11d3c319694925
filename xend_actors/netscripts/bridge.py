"""The ``network`` and ``vif-bridge`` scripts' logic, through pyroute2's ``IPRoute``.

``network start`` records every change it makes as an *action* in a state file
(``<state dir>/network-<bridge>.json``, written atomically after each change), and
``network stop`` undoes the recorded actions in reverse order, so a stop leaves the host
exactly as before the start -- and a start that fails half-way is rolled back the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from xend_actors.netscripts.names import valid_ifname

from . import antispoof
from .cli import EXIT_ABSENT, EXIT_OK, EXIT_USAGE, ScriptError, parse, yes_no

DEFAULT_BRIDGE = "xen-br0"
DEFAULT_STATE_DIR = "/var/run/xend"
IFA_F_SECONDARY = 0x01
IFA_F_TENTATIVE = 0x40
RT_TABLE_LOCAL = 255
RTPROT_KERNEL, RTPROT_RA = 2, 9
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


# --- helpers ---------------------------------------------------------------------------


def _ifname(value: str, what: str) -> str:
    if not valid_ifname(value):
        raise ScriptError(f"bad {what} name {value!r}", EXIT_USAGE)
    return value


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _link(ipr: IPRoute, index: int) -> Any:
    return ipr.get_links(index)[0]


def _is_up(link: Any) -> bool:
    return bool(link["flags"] & 1)


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def _name_of(ipr: IPRoute, index: int | None) -> str | None:
    if not index:
        return None
    try:
        return _link(ipr, index).get_attr("IFLA_IFNAME")
    except NetlinkError:
        return None


def _need(ipr: IPRoute, name: str) -> int:
    idx = _index(ipr, name)
    if idx is None:
        raise ScriptError(f"no such network device {name}")
    return idx


# --- addresses and routes as plain dicts (the state file keeps them) --------------------


def _addr_spec(msg: Any) -> dict:
    spec = {
        "family": msg["family"],
        "prefixlen": msg["prefixlen"],
        "scope": msg["scope"],
        "address": msg.get_attr("IFA_ADDRESS"),
        "local": msg.get_attr("IFA_LOCAL"),
        "broadcast": msg.get_attr("IFA_BROADCAST"),
        "label": msg.get_attr("IFA_LABEL"),
        "flags": (msg.get_attr("IFA_FLAGS") or msg["flags"]) & ~IFA_F_TENTATIVE,
    }
    return spec


def _movable_addrs(ipr: IPRoute, index: int) -> list[dict]:
    """The device's addresses to move: all but IPv6 link-local ones (the kernel makes those)."""
    out = []
    for msg in ipr.get_addr(index=index):
        spec = _addr_spec(msg)
        if spec["family"] == socket.AF_INET6 and spec["address"].lower().startswith("fe80:"):
            continue
        out.append(spec)
    # primaries before secondaries: adding in this order and deleting in reverse is safe
    out.sort(key=lambda s: bool(s["flags"] & IFA_F_SECONDARY))
    return out


def _addr_add(ipr: IPRoute, index: int, spec: dict, label: bool) -> None:
    kw: dict[str, Any] = {"index": index, "family": spec["family"],
                          "address": spec["address"], "prefixlen": spec["prefixlen"],
                          "scope": spec["scope"]}
    if spec["local"]:
        kw["local"] = spec["local"]
    if spec["broadcast"]:
        kw["broadcast"] = spec["broadcast"]
    if label and spec["label"]:
        kw["label"] = spec["label"]
    flags = spec["flags"] & ~IFA_F_SECONDARY
    if flags:
        kw["IFA_FLAGS"] = flags
    try:
        ipr.addr("add", **kw)
    except NetlinkError as e:
        if e.code != 17:  # EEXIST: already there
            raise


def _addr_del(ipr: IPRoute, index: int, spec: dict) -> None:
    kw: dict[str, Any] = {"index": index, "family": spec["family"],
                          "address": spec["address"], "prefixlen": spec["prefixlen"]}
    if spec["local"]:
        kw["local"] = spec["local"]
    try:
        ipr.addr("del", **kw)
    except NetlinkError as e:
        if e.code not in (99, 19, 2):  # EADDRNOTAVAIL / ENODEV / ENOENT: already gone
            raise


def _route_spec(msg: Any) -> dict:
    return {
        "family": msg["family"],
        "dst": msg.get_attr("RTA_DST"),
        "dst_len": msg["dst_len"],
        "tos": msg["tos"],
        "table": msg.get_attr("RTA_TABLE") or msg["table"],
        "proto": msg["proto"],
        "scope": msg["scope"],
        "type": msg["type"],
        "gateway": msg.get_attr("RTA_GATEWAY"),
        "priority": msg.get_attr("RTA_PRIORITY"),
        "prefsrc": msg.get_attr("RTA_PREFSRC"),
    }


def _movable_routes(ipr: IPRoute, index: int) -> list[dict]:
    """Routes out of the device not made by the kernel itself (prefix/local/RA routes)."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family):
            if msg.get_attr("RTA_OIF") != index:
                continue
            spec = _route_spec(msg)
            if spec["table"] == RT_TABLE_LOCAL or spec["proto"] in (RTPROT_KERNEL, RTPROT_RA):
                continue
            if family == socket.AF_INET6 and spec["dst"] and spec["dst"].startswith("ff"):
                continue
            out.append(spec)
    # routes without a gateway first (a gateway must be reachable when its route is added)
    out.sort(key=lambda s: s["gateway"] is not None)
    return out


def _route_kw(index: int, spec: dict) -> dict:
    kw: dict[str, Any] = {"oif": index, "family": spec["family"], "dst_len": spec["dst_len"],
                          "tos": spec["tos"], "table": spec["table"], "proto": spec["proto"],
                          "scope": spec["scope"], "type": spec["type"]}
    for key in ("dst", "gateway", "priority", "prefsrc"):
        if spec[key] is not None:
            kw[key] = spec[key]
    return kw


def _route_add(ipr: IPRoute, index: int, spec: dict) -> None:
    try:
        ipr.route("add", **_route_kw(index, spec))
    except NetlinkError as e:
        if e.code != 17:
            raise


def _route_del(ipr: IPRoute, index: int, spec: dict) -> None:
    try:
        ipr.route("del", **_route_kw(index, spec))
    except NetlinkError as e:
        if e.code not in (3, 19, 2):  # ESRCH / ENODEV / ENOENT: already gone
            raise


# --- state file ---------------------------------------------------------------------------


class State:
    """The actions ``network start`` did for one bridge, saved atomically after each one."""

    def __init__(self, directory: Path, bridge: str) -> None:
        self.path = directory / f"network-{bridge}.json"
        self.data: dict[str, Any] = {"bridge": bridge, "actions": []}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
                assert isinstance(self.data.get("actions"), list)
            except (OSError, ValueError, AssertionError):
                raise ScriptError(f"state file {self.path} is unreadable or damaged") from None

    @property
    def actions(self) -> list[dict]:
        return self.data["actions"]

    def record(self, action: dict) -> None:
        self.actions.append(action)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".network-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _undo(ipr: IPRoute, action: dict) -> None:
    op = action["op"]
    idx = _index(ipr, action["ifname"])
    if idx is None:
        return  # the device is gone, and with it what was done to it
    if op == "create-bridge":
        ipr.link("del", index=idx)
    elif op == "set-up":
        ipr.link("set", index=idx, state="down")
    elif op == "enslave":
        ipr.link("set", index=idx, master=0)
    elif op == "add-addr":
        _addr_del(ipr, idx, action["addr"])
    elif op == "del-addr":
        _addr_add(ipr, idx, action["addr"], label=True)
    elif op == "add-route":
        _route_del(ipr, idx, action["route"])
    elif op == "del-route":
        _route_add(ipr, idx, action["route"])
    else:
        raise ScriptError(f"unknown action {op!r} in the state file")


def _undo_all(ipr: IPRoute, state: State, keep: int = 0) -> None:
    """Undo the actions after the first ``keep``, last first; the state follows each step."""
    while len(state.actions) > keep:
        _undo(ipr, state.actions[-1])
        state.actions.pop()
        state.save()


# --- network ---------------------------------------------------------------------------------


def _state_dir(values: dict[str, str]) -> Path:
    return Path(values.get("state-dir") or os.environ.get("XEND_RUN_DIR") or DEFAULT_STATE_DIR)


def network_start(ipr: IPRoute, bridge: str, netdev: str | None, state: State) -> None:
    keep = len(state.actions)
    try:
        _network_start(ipr, bridge, netdev, state)
    except BaseException:
        with contextlib.suppress(Exception):
            _undo_all(ipr, state, keep)
            if not state.actions:
                state.forget()
        raise


def _network_start(ipr: IPRoute, bridge: str, netdev: str | None, state: State) -> None:
    br = _index(ipr, bridge)
    if br is None:
        ipr.link("add", ifname=bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
        state.record({"op": "create-bridge", "ifname": bridge})
        br = _need(ipr, bridge)
    elif _kind(_link(ipr, br)) != "bridge":
        raise ScriptError(f"{bridge} exists and is not a bridge")
    if not _is_up(_link(ipr, br)):
        ipr.link("set", index=br, state="up")
        state.record({"op": "set-up", "ifname": bridge})
    if not netdev:
        return
    dev = _need(ipr, netdev)
    if dev == br:
        raise ScriptError("netdev is the bridge itself")
    link = _link(ipr, dev)
    master = link.get_attr("IFLA_MASTER")
    if master == br:
        return  # already done
    if master:
        raise ScriptError(f"{netdev} is already enslaved to {_name_of(ipr, master)}")
    addrs = _movable_addrs(ipr, dev)
    routes = _movable_routes(ipr, dev)
    # one device at a time holds an address (the kernel's local routes are per address)
    for spec in routes:
        _route_del(ipr, dev, spec)
        state.record({"op": "del-route", "ifname": netdev, "route": spec})
    for spec in reversed(addrs):  # secondaries first: deleting a primary takes them along
        _addr_del(ipr, dev, spec)
        state.record({"op": "del-addr", "ifname": netdev, "addr": spec})
    for spec in addrs:
        _addr_add(ipr, br, spec, label=False)
        state.record({"op": "add-addr", "ifname": bridge, "addr": spec})
    for spec in routes:
        _route_add(ipr, br, spec)
        state.record({"op": "add-route", "ifname": bridge, "route": spec})
    ipr.link("set", index=dev, master=br)
    state.record({"op": "enslave", "ifname": netdev})
    if not _is_up(_link(ipr, dev)):
        ipr.link("set", index=dev, state="up")
        state.record({"op": "set-up", "ifname": netdev})


def network_status(ipr: IPRoute, bridge: str, out: Any = sys.stdout) -> int:
    br = _index(ipr, bridge)
    if br is None:
        print(f"bridge {bridge}: absent", file=out)
        return EXIT_ABSENT
    link = _link(ipr, br)
    print(f"bridge {bridge}: {'up' if _is_up(link) else 'down'} kind={_kind(link)}", file=out)
    ports = sorted(lk.get_attr("IFLA_IFNAME") for lk in ipr.get_links()
                   if lk.get_attr("IFLA_MASTER") == br)
    print(f"ports: {' '.join(ports) if ports else '-'}", file=out)
    for msg in ipr.get_addr(index=br):
        print(f"address: {msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}", file=out)
    return EXIT_OK


def network_main(argv: list[str]) -> int:
    op, v = parse(argv, ("start", "stop", "status"), ("bridge", "netdev", "antispoof"),
                  options=("state-dir",))
    bridge = v.get("bridge") or DEFAULT_BRIDGE
    if bridge == "null":
        return EXIT_OK
    _ifname(bridge, "bridge")
    netdev = _ifname(v["netdev"], "netdev") if v.get("netdev") else None
    # antispoof= is accepted for the original's command line; the per-vif filter
    # (vif-bridge) does the enforcing, so the bridge itself needs nothing for it.
    yes_no(v.get("antispoof", "yes"), "antispoof")
    with IPRoute() as ipr:
        if op == "status":
            return network_status(ipr, bridge)
        with _locked(_state_dir(v), bridge):
            state = State(_state_dir(v), bridge)
            if op == "start":
                network_start(ipr, bridge, netdev, state)
            else:
                _undo_all(ipr, state)
                state.forget()
    return EXIT_OK


@contextlib.contextmanager
def _locked(directory: Path, bridge: str) -> Iterator[None]:
    """One start/stop at a time per bridge (an flock on a lock file next to the state)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f".network-{bridge}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ScriptError(f"state dir {directory}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- vif-bridge ------------------------------------------------------------------------------


def vif_up(ipr: IPRoute, vif: str, bridge: str, mac: str, nets: list, enforce: bool) -> None:
    idx = _need(ipr, vif)
    br = _index(ipr, bridge)
    if br is None:
        raise ScriptError(f"bridge {bridge} does not exist (run the network script first)")
    if _kind(_link(ipr, br)) != "bridge":
        raise ScriptError(f"{bridge} is not a bridge")
    if _link(ipr, idx).get_attr("IFLA_MASTER") != br:
        ipr.link("set", index=idx, master=br)
    if enforce and nets:
        antispoof.install(ipr, idx, nets, mac)
    else:
        antispoof.remove(ipr, idx)
    ipr.link("set", index=idx, state="up")


def vif_down(ipr: IPRoute, vif: str, bridge: str) -> None:
    idx = _index(ipr, vif)
    if idx is None:
        return  # gone with its domain: nothing left to remove
    antispoof.remove(ipr, idx)
    link = _link(ipr, idx)
    master = link.get_attr("IFLA_MASTER")
    if master and _name_of(ipr, master) == bridge:
        ipr.link("set", index=idx, master=0)
    if _is_up(link):
        ipr.link("set", index=idx, state="down")


def vif_status(ipr: IPRoute, vif: str, out: Any = sys.stdout) -> int:
    idx = _index(ipr, vif)
    if idx is None:
        print(f"vif {vif}: absent", file=out)
        return EXIT_ABSENT
    link = _link(ipr, idx)
    master = _name_of(ipr, link.get_attr("IFLA_MASTER")) or "-"
    print(f"vif {vif}: {'up' if _is_up(link) else 'down'} bridge={master}", file=out)
    st = antispoof.stats(ipr, idx)
    if st is None:
        print("antispoof: off", file=out)
    else:
        print(f"antispoof: {'on' if st['filter'] else 'no filter'} "
              f"packets={st['packets']} drop={st['drop']}", file=out)
    return EXIT_OK


def vif_main(argv: list[str]) -> int:
    op, v = parse(argv, ("up", "down", "status"),
                  ("vif", "domain", "mac", "bridge", "ip", "antispoof"))
    if not v.get("vif"):
        raise ScriptError("vif= is required", EXIT_USAGE)
    vif = _ifname(v["vif"], "vif")
    if op == "status":
        with IPRoute() as ipr:
            return vif_status(ipr, vif)
    for key in ("domain", "mac", "bridge"):
        if not v.get(key):
            raise ScriptError(f"{key}= is required", EXIT_USAGE)
    if not _MAC.match(v["mac"]):
        raise ScriptError(f"bad mac {v['mac']!r}", EXIT_USAGE)
    bridge = v["bridge"]
    if bridge == "null":
        return EXIT_OK
    _ifname(bridge, "bridge")
    enforce = yes_no(v.get("antispoof", "yes"), "antispoof")
    try:
        nets = antispoof.parse_nets((v.get("ip") or "").split())
    except antispoof.AntispoofError as e:
        raise ScriptError(str(e), EXIT_USAGE) from None
    with IPRoute() as ipr:
        if op == "up":
            vif_up(ipr, vif, bridge, v["mac"], nets, enforce)
        else:
            vif_down(ipr, vif, bridge)
    return EXIT_OK
