"""The pool's etcd, as the pool's code needs it: a few calls on keys, transactions and
leases, tried on each of the cluster's client URLs in turn.

etcd3gw (OpenStack's client, over the JSON gateway every etcd v3 serves) carries the
calls: plain HTTP through ``requests``, no gRPC and no C extension in a daemon that
forks scripts and hypervisors. It is imported only by a xend in a pool.

A URL that does not answer (a member down, or cut off from us) is skipped for the next,
and the one that answered is tried first next time; when none answers, the call raises
``PoolUnavailable`` (503), which the pool's operations give their clients as it is.
While the cluster elects a new leader, its members answer nothing (a write sent to a
follower was forwarded to the dead leader and is lost; a lease renewal waits for the
new one) or an error: a call whose URLs all failed so goes round them again, until
``CALL_BUDGET``, whereas members that are down (refused, TLS failed) fail it at once.
A call that needed more than one URL, or long, is logged with its time and why.
When no member could be reached at all, ``unreachable`` says so until a call gets an
answer again (the member's lease thread keeps trying): a name claim, on the domain
table's way, is refused at once meanwhile instead of waiting out every member again.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from xend_actors.errors import XendError

if TYPE_CHECKING:
    from etcd3gw.client import Etcd3Client

log = logging.getLogger(__name__)

CALL_TIMEOUT = 1.0  # seconds for one URL to answer one call: well under a lease's TTL
# Seconds a call goes round the URLs while members may answer in a moment: an election
# (etcd's default election timeout is 1 s; a split vote takes another) is waited out.
CALL_BUDGET = 3.0
ROUND_PAUSE = 0.05  # seconds between two rounds of the URLs
SLOW_CALL = 0.5  # seconds: a call that took longer is logged
MAX_VALUE = 64 * 1024  # bytes: any value read from etcd longer than this is refused
T = TypeVar("T")


class PoolUnavailable(XendError):
    """The pool's etcd cannot be reached (HTTP 503); the host goes on on its own."""

    status = 503


@dataclass(frozen=True)
class Kv:
    """One key as read: its value and the revisions a transaction can compare."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction (etcd's ``Compare``): the key's ``target`` (VALUE,
    MOD, CREATE) ``result`` (EQUAL, NOT_EQUAL, ...) the given value."""

    key: str
    target: str
    value: str | int
    result: str = "EQUAL"

    def wire(self) -> dict[str, Any]:
        field = {"VALUE": "value", "MOD": "mod_revision", "CREATE": "create_revision",
                 "VERSION": "version"}[self.target]
        value: Any = _b64(self.value) if self.target == "VALUE" else str(self.value)
        return {"key": _b64(self.key), "target": self.target, "result": self.result,
                field: value}


@dataclass(frozen=True)
class Range:
    """One range of a ``read``: the keys from ``key`` up to ``end`` (not included; by
    default every key starting with ``key``); only those written after the revision
    ``since`` when it is given; only how many there are (``count_only``), or the keys
    without their values (``keys_only``)."""

    key: str
    end: str = ""
    since: int = 0
    count_only: bool = False
    keys_only: bool = False

    def wire(self) -> dict[str, Any]:
        request: dict[str, Any] = {"key": _b64(self.key), "range_end": _b64(
            self.end.encode() if self.end else _prefix_end(self.key))}
        if self.since:
            request["min_mod_revision"] = str(self.since + 1)
        if self.count_only:
            request["count_only"] = True
        if self.keys_only:
            request["keys_only"] = True
        return request


@dataclass(frozen=True)
class Ranged:
    """What a ``Range`` read: its keys, and how many (a ``count_only`` range's answer)."""

    kvs: list[Kv]
    count: int


def put(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    """A put, as one step of a transaction."""
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete(key: str) -> dict[str, Any]:
    """A delete, as one step of a transaction."""
    return {"request_delete_range": {"key": _b64(key)}}


class Etcd:
    """The cluster behind ``urls``; thread-safe (each call is one HTTP request)."""

    def __init__(self, urls: Sequence[str], *, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None,
                 timeout: float = CALL_TIMEOUT) -> None:
        from etcd3gw.client import Etcd3Client  # only a xend in a pool loads requests

        from xend_actors.pool.gateway import GatewaySession

        context = None
        if any(url.startswith("https:") for url in urls):
            context = tls_context(ca, cert, key)
        self._clients: list[Etcd3Client] = []
        for url in urls:
            parts = urlsplit(url)
            session = GatewaySession(url, context if parts.scheme == "https" else None)
            self._clients.append(Etcd3Client(
                host=parts.hostname or "localhost", port=parts.port or 2379,
                protocol=parts.scheme, timeout=timeout, api_path="/v3/",
                session=session))  # type: ignore[arg-type]  # posts as requests' would
        self.urls = tuple(urls)
        self._first = 0  # the URL that answered last
        self._lock = threading.Lock()
        # Why no member could be reached by the last call, until one answers again.
        self.unreachable = ""

    # --- calls ---------------------------------------------------------------------------

    def get(self, key: str) -> Kv | None:
        kvs = self._range({"key": _b64(key)})
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str) -> list[Kv]:
        return self._range({"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))})

    def read(self, *ranges: Range) -> tuple[int, list[Ranged]]:
        """Each of ``ranges``, all read at one revision in one round trip (a transaction
        of ranges); and that revision. A value over ``MAX_VALUE`` is left out (logged),
        so that one bad key never hides the others."""
        reply = self._call("a read", lambda c: c.post(c.get_url("/kv/txn"), json={
            "success": [{"request_range": r.wire()} for r in ranges]}))
        responses = reply.get("responses", [])
        if len(responses) != len(ranges):
            raise PoolUnavailable("the pool's etcd answered something unexpected")
        read = []
        for response in responses:
            answered = response.get("response_range", {})
            read.append(Ranged(_kvs(answered.get("kvs", [])), int(answered.get("count", 0))))
        return int(reply.get("header", {}).get("revision", 0)), read

    def txn(self, compare: Sequence[Compare], success: Sequence[dict[str, Any]],
            failure: Sequence[dict[str, Any]] = ()) -> bool:
        """Whether every condition held (and so ``success`` was done, else ``failure``)."""
        body = {"compare": [c.wire() for c in compare], "success": list(success),
                "failure": list(failure)}
        reply = self._call("a transaction", lambda c: c.post(c.get_url("/kv/txn"), json=body))
        return bool(reply.get("succeeded", False))

    def put(self, key: str, value: str | bytes, lease: int = 0) -> None:
        self.txn((), [put(key, value, lease)])

    def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        reply = self._call("a lease grant", lambda c: c.post(
            c.get_url("/lease/grant"), json={"TTL": max(1, round(ttl)), "ID": 0}))
        return int(reply["ID"])

    def refresh(self, lease: int) -> float:
        """Keep ``lease`` alive: the seconds it has now, or 0 if it had already expired."""
        reply = self._call("a lease renewal", lambda c: c.post(
            c.get_url("/lease/keepalive"), json={"ID": lease}))
        return max(0.0, float(reply.get("result", {}).get("TTL", 0)))

    def revoke(self, lease: int) -> None:
        self._call("a lease revoke", lambda c: c.post(c.get_url("/kv/lease/revoke"),
                                                      json={"ID": lease}))

    # --- the URLs in turn ------------------------------------------------------------------

    def _range(self, request: dict[str, Any]) -> list[Kv]:
        reply = self._call("a read", lambda c: c.post(c.get_url("/kv/range"), json=request))
        return [_kv(item) for item in reply.get("kvs", [])]

    def _call(self, what: str, call: Callable[[Etcd3Client], Any]) -> Any:
        from etcd3gw.exceptions import Etcd3Exception

        started = time.monotonic()
        first = self._first
        failed: list[str] = []  # "URL: why", in order
        reached = False  # some member answered, if with an error
        while True:
            again = False  # a member may answer in a moment: worth another round
            for turn in range(len(self._clients)):
                index = (first + turn) % len(self._clients)
                try:
                    reply = call(self._clients[index])
                except (Etcd3Exception, ValueError) as error:  # ValueError: not JSON
                    why, final, answered = _failure(error)
                    failed.append(f"{self.urls[index]}: {why}")
                    again |= not final
                    reached |= answered
                    continue
                took = time.monotonic() - started
                if failed or took > SLOW_CALL:
                    why = f" ({'; '.join(failed[-len(self._clients):])})" if failed else ""
                    log.info("Pool etcd: %s answered by %s after %.3f s%s", what,
                             self.urls[index], took, why)
                self.unreachable = ""
                if index != first:
                    with self._lock:
                        self._first = index
                if not isinstance(reply, dict):
                    raise PoolUnavailable("the pool's etcd answered something unexpected")
                return reply
            if not again or time.monotonic() - started + ROUND_PAUSE >= CALL_BUDGET:
                message = (f"the pool's etcd is unreachable "
                           f"({'; '.join(failed[-len(self._clients):])})")
                if not reached:
                    self.unreachable = message
                raise PoolUnavailable(message)
            time.sleep(ROUND_PAUSE)


def _failure(error: Exception) -> tuple[str, bool, bool]:
    """Why a member did not do a call; whether another try soon is in vain (it is down,
    or answered for good), else it may do it in a moment (it timed out, or answered that
    it cannot now: 5xx, no leader, a request that timed out in there); and whether it
    answered at all."""
    from etcd3gw.exceptions import (
        ConnectionFailedError,
        ConnectionTimeoutError,
        InternalServerError,
    )

    from xend_actors.pool.gateway import Unanswered

    # etcd3gw raises its own exceptions from the session's (its ``__context__``)
    cause = error.__context__
    if isinstance(cause, Unanswered):
        return cause.reason, cause.down, False
    if isinstance(error, ValueError):
        return "answered something not JSON", True, True
    detail = str(getattr(error, "detail_text", "") or error)[:200]
    transient = isinstance(error, (ConnectionFailedError, ConnectionTimeoutError,
                                   InternalServerError))
    return f"answered an error: {detail}", not transient, True


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client's TLS to the pool's etcd: trusting ``ca`` (None: the system's CAs), with
    ``cert`` and ``key`` as its client certificate; XendError naming the option whose
    file cannot be used."""
    if ca is None:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and the host's name
        try:
            context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as error:
            raise XendError(f"(xend-pool-etcd-ca {ca}): {_file_reason(error)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as error:
            raise XendError(f"(xend-pool-etcd-cert {cert}) with (xend-pool-etcd-key "
                            f"{key or cert}): {_file_reason(error)}") from None
    return context


def _file_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        words = (error.reason or str(error)).lower().replace("_", " ")
        return f"not a PEM certificate (and key) that fit: {words}"
    return f"cannot read it: {error.strerror or error}"


def _kv(item: dict[str, Any]) -> Kv:
    value = base64.b64decode(item.get("value", ""))
    if len(value) > MAX_VALUE:
        raise PoolUnavailable(f"the pool's etcd holds a value of {len(value)} bytes, "
                              f"over {MAX_VALUE}")
    return Kv(base64.b64decode(item["key"]).decode("utf-8", "replace"), value,
              int(item.get("mod_revision", 0)), int(item.get("create_revision", 0)),
              int(item.get("lease", 0)))


def _kvs(items: list[dict[str, Any]]) -> list[Kv]:
    kvs = []
    for item in items:
        try:
            kvs.append(_kv(item))
        except PoolUnavailable as error:
            log.warning("Pool: %s left out: %s", _key(item), error.message)
    return kvs


def _key(item: dict[str, Any]) -> str:
    return base64.b64decode(item.get("key", "")).decode("utf-8", "replace")[:200]


def _b64(data: str | bytes | int) -> str:
    raw = data if isinstance(data, bytes) else str(data).encode()
    return base64.b64encode(raw).decode("ascii")


def _prefix_end(prefix: str) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)
