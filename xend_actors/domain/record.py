"""What xend knows of a domain beyond the hypervisor's flags, what it reports of one, and
their SXP both ways.

A ``DomainRecord`` is owned by the domain's Domain actor, which persists it under
the store's ``domain/<id>`` and tells the DomainTable each new version. A
``DomainInfo`` is what the table answers about a domain: the record joined with the
hypervisor's snapshot and the console's info; its SXP is the domain info reply (facts
§4.5). The store record is that same info SXP (facts §7.5), read back by ``from_sxpr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from xend_actors import sxp
from xend_actors.console.info import ConsoleInfo
from xend_actors.device.config import Device, VifConfig, device_sxpr, parse_device
from xend_actors.device.info import DeviceInfo, device_info_from_sxpr
from xend_actors.domain.config import DomainConfig, parse_domain_config
from xend_actors.errors import BadRequest
from xend_actors.hypervisor.base import HvDomain, ShutdownReason

E = TypeVar("E", bound=Enum)


class RestartState(Enum):
    PENDING = "pending"  # a restart will follow the domain's exit
    BOOTING = "booting"  # the domain is being rebuilt


@dataclass(frozen=True)
class VifChange:
    """A vif's ``device_configure`` under way: vif ``idx`` to become ``vif``."""

    idx: int
    vif: VifConfig

    def sxpr(self) -> sxp.Value:
        return ["configuring", str(self.idx), device_sxpr(self.vif)]


@dataclass(frozen=True)
class DomainRecord:
    domid: int
    name: str
    config: DomainConfig | None = None  # None: adopted, not created by xend
    start_time: float | None = None  # kept across restarts, so up_time keeps counting
    restart_state: RestartState | None = None
    restart_time: float | None = None  # when the last restart began
    shutdown_request: ShutdownReason | None = None  # what xend last asked the guest
    console_port: int | None = None  # kept in the store: the console comes back on it
    devices: tuple[DeviceInfo, ...] = ()  # attached now, in the order they were attached
    # Intents, written before the backend or the hypervisor is asked, so that a xend
    # stopped midway finishes or undoes the work at its next start (``Domain.recover``):
    plugging: Device | None = None  # a hot-plug under way (its idx: the next of its kind)
    unplugging: DeviceInfo | None = None  # a device_destroy under way
    configuring: VifChange | None = None  # a vif's device_configure under way
    # Being destroyed (its devices may be half released), or its exit reported: a next
    # xend finishes the end, silently.
    ending: bool = False


@dataclass(frozen=True)
class DomainInfo:
    """One domain as xend reports it, at ``now``."""

    record: DomainRecord
    hv: HvDomain | None  # None: the hypervisor does not have it now (restarting)
    console: ConsoleInfo | None
    now: float

    @property
    def domid(self) -> int:
        return self.record.domid

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def config(self) -> DomainConfig | None:
        return self.record.config

    @property
    def paused(self) -> bool:
        return self.hv is not None and self.hv.state.paused

    @property
    def memory_mb(self) -> int | None:
        """What it has (the hypervisor's figure), else what its config asks for."""
        if self.hv is not None:
            return self.hv.memory_kb // 1024
        return self.record.config.memory_mb if self.record.config is not None else None

    @property
    def up_time(self) -> float | None:
        start = self.record.start_time
        return None if start is None else self.now - start

    def sxpr(self) -> sxp.Value:
        """The domain info reply of facts §4.5, fields in the original's order."""
        return info_sxpr(self.record, self.hv, self.now,
                          self.console.sxpr() if self.console is not None else None)


def info_sxpr(record: DomainRecord, hv: HvDomain | None, now: float,
               console: sxp.Value | None) -> list[Any]:
    info: list = ["domain", ["id", str(record.domid)], ["name", record.name]]
    if hv is not None:
        info.append(["memory", str(hv.memory_kb // 1024)])
        info.append(["maxmem", str(hv.maxmem_kb // 1024)])
        info.append(["state", hv.state.letters])
        if hv.state.shutdown:
            reason = hv.shutdown_reason.value if hv.shutdown_reason else "?"
            info.append(["shutdown_reason", reason])
        info += [["cpu", str(hv.cpu)], ["cpu_time", hv.cpu_time]]
    elif record.config is not None:
        info.append(["memory", str(record.config.memory_mb)])
    if record.start_time is not None:
        info += [["up_time", now - record.start_time], ["start_time", record.start_time]]
    if console is not None:
        info.append(console)
    if record.restart_state is not None:
        info.append(["restart_state", record.restart_state.value])
    if record.restart_time is not None:
        info.append(["restart_time", record.restart_time])
    info.append(["devices", *(device.sxpr() for device in record.devices)])
    if record.config is not None:
        info.append(["config", record.config.sxpr])
    return info


def from_sxpr(value: sxp.Value) -> DomainRecord:
    """A record read back from the store; a bad one raises ``BadRequest``."""
    if sxp.name(value) != "domain":
        raise BadRequest("not a domain record")
    try:
        config = sxp.child_value(value, "config")
        return DomainRecord(
            domid=int(sxp.child_value(value, "id")),
            name=str(sxp.child_value(value, "name")),
            config=parse_domain_config(config) if config is not None else None,
            start_time=_float(sxp.child_value(value, "start_time")),
            restart_state=_enum(RestartState, sxp.child_value(value, "restart_state")),
            restart_time=_float(sxp.child_value(value, "restart_time")),
            shutdown_request=_enum(ShutdownReason, sxp.child_value(value, "shutdown_request")),
            console_port=_int(sxp.child_value(sxp.child(value, "console"), "console_port")),
            devices=tuple(device_info_from_sxpr(device)
                          for device in sxp.children(sxp.child(value, "devices"))),
            plugging=_device(sxp.child_value(value, "plugging")),
            unplugging=_device_info(sxp.child_value(value, "unplugging")),
            configuring=_vif_change(sxp.child(value, "configuring")),
            ending=sxp.child_value(value, "ending") == "yes",
        )
    except (TypeError, ValueError) as error:
        raise BadRequest(f"bad domain record: {error}") from None


def store_sxpr(record: DomainRecord, now: float) -> sxp.Value:
    """The store record: the info SXP plus what only xend needs back. Of the console it
    keeps only the port: its status belongs to the running xend."""
    console = None if record.console_port is None else [
        "console", ["console_port", str(record.console_port)]]
    value = info_sxpr(record, None, now, console)
    if record.shutdown_request is not None:
        value.append(["shutdown_request", record.shutdown_request.value])
    if record.plugging is not None:
        value.append(["plugging", device_sxpr(record.plugging)])
    if record.unplugging is not None:
        value.append(["unplugging", record.unplugging.sxpr()])
    if record.configuring is not None:
        value.append(record.configuring.sxpr())
    if record.ending:
        value.append(["ending", "yes"])
    return value


def _device(value: sxp.Value | None) -> Device | None:
    return None if value is None else parse_device(value)


def _vif_change(value: sxp.Value | None) -> VifChange | None:
    if value is None:
        return None
    match value:
        case ["configuring", str(idx), list(config)] if idx.isdigit():
            vif = parse_device(config)
            if isinstance(vif, VifConfig):
                return VifChange(int(idx), vif)
    raise ValueError(f"not a vif change: {sxp.show(value)[:80]}")


def _device_info(value: sxp.Value | None) -> DeviceInfo | None:
    return None if value is None else device_info_from_sxpr(value)


def _float(text: object) -> float | None:
    return None if text is None else float(str(text))


def _int(text: object) -> int | None:
    return None if text is None else int(str(text))


def _enum(kind: type[E], text: object) -> E | None:
    return None if text is None else kind(str(text))
