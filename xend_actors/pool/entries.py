"""What the pool keeps in etcd: where each thing lives under the pool's prefix, and the
values, as frozen dataclasses read back with every field checked (etcd's contents are
input like any other).

    /xend-pool/<pool>/hosts/<host>    a member: HostEntry, under its lease
    /xend-pool/<pool>/names/<domain>  the name's claim: the owning member's name, plain
    /xend-pool/<pool>/domains/<domain> DomainEntry, written by the owner
    /xend-pool/<pool>/ha/<domain>     an HA domain's config (SXP), to restart it elsewhere

A claim's value is the bare member name so that a transaction can compare it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from xend_actors.errors import XendError

MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class BadEntry(XendError):
    """A value in the pool's etcd that is not what xend writes (skipped where read)."""


@dataclass(frozen=True)
class Keys:
    """The keys of one pool."""

    pool: str

    @property
    def root(self) -> str:
        return f"/xend-pool/{self.pool}/"

    @property
    def hosts(self) -> str:
        return self.root + "hosts/"

    @property
    def names(self) -> str:
        return self.root + "names/"

    @property
    def domains(self) -> str:
        return self.root + "domains/"

    @property
    def ha(self) -> str:
        return self.root + "ha/"

    def host(self, host: str) -> str:
        return self.hosts + host

    def name(self, domain: str) -> str:
        return self.names + domain

    def domain(self, domain: str) -> str:
        return self.domains + domain

    def ha_config(self, domain: str) -> str:
        return self.ha + domain


@dataclass(frozen=True)
class HostEntry:
    """A member as it registered: where its API is, how to trust it, and its room."""

    host: str
    api: str  # the URL other members reach its HTTP API at
    fingerprint: str  # SHA-256 of its API's TLS certificate ('' when it speaks plain HTTP)
    free_mb: int  # memory free for new domains
    cpus: int
    domains: int  # how many domains it runs, Domain-0 apart
    load: float  # the host's load average over a minute
    joined: float  # when it (last) joined, seconds since the epoch
    relocation: str = ""  # host:port of its relocation server; '' when it takes no migrations

    def to_json(self) -> bytes:
        return _json(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> HostEntry:
        data = _object(raw)
        # relocation: absent in the entries of members from before it (none then)
        return cls(_member(data, "host"), _str(data, "api"), _str(data, "fingerprint"),
                   _int(data, "free_mb"), _int(data, "cpus"), _int(data, "domains"),
                   _float(data, "load"), _float(data, "joined"),
                   _str(data, "relocation") if "relocation" in data else "")


@dataclass(frozen=True)
class DomainEntry:
    """A domain as its host last published it."""

    name: str
    host: str
    domid: int
    state: str  # xm's state letters, e.g. 'r-----'
    memory_mb: int
    vcpus: int
    ha: bool

    def to_json(self) -> bytes:
        return _json(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> DomainEntry:
        data = _object(raw)
        return cls(_str(data, "name"), _member(data, "host"), _int(data, "domid"),
                   _str(data, "state"), _int(data, "memory_mb"), _int(data, "vcpus"),
                   bool(data.get("ha", False)))


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadEntry(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadEntry("not a JSON object")
    return data


def _str(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or len(value) > 1024:
        raise BadEntry(f"{field}: not a string")
    return value


def _member(data: dict[str, Any], field: str) -> str:
    value = _str(data, field)
    if not MEMBER_NAME.fullmatch(value):
        raise BadEntry(f"{field}: not a member name")
    return value


def _int(data: dict[str, Any], field: str) -> int:
    value = data.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadEntry(f"{field}: not an integer")
    return value


def _float(data: dict[str, Any], field: str) -> float:
    value = data.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadEntry(f"{field}: not a number")
    return float(value)
