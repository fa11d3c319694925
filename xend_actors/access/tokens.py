"""API tokens: named secrets for programs, each with a role, kept hashed in the store.

A token is ``<name>.<secret>``: the name finds its record, the secret (32 random bytes,
URL-safe base64) is checked against the record's SHA-256 in constant time. Only the
hash is ever written (``dbroot/token/<name>``, mode 0600); the secret is shown once,
when the token is made. The secret is random and long, so a plain hash is enough: no
password-stretching is needed against guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from xend_actors import sxp
from xend_actors.access.identity import Principal, Role, Via
from xend_actors.access.revocations import Revocations
from xend_actors.errors import BadRequest, Conflict, NotFound
from xend_actors.store import RecordDir

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOKEN_LENGTH = 128
MAX_TOKENS = 1000
POOL = "pool"  # the principal of the pool's shared token (pool_token.py): no token's name


@dataclass(frozen=True)
class TokenInfo:
    """What is known of a token, never its secret."""

    name: str
    role: Role
    created: float  # seconds since the epoch

    def sxpr(self) -> sxp.Value:
        return ["token", ["name", self.name], ["role", self.role.value],
                ["created", f"{self.created:.0f}"]]


@dataclass(frozen=True)
class _Record:
    info: TokenInfo
    digest: str  # SHA-256 of the secret, hex


class Tokens:
    """The tokens of one xend: made, listed, deleted, and checked on every request."""

    def __init__(self, records: RecordDir, revocations: Revocations | None = None) -> None:
        self._records = records
        self._revocations = revocations or Revocations()
        self._lock = threading.Lock()
        self._tokens = {name: record for name, value in records.load_all().items()
                        if (record := _from_sxp(value)) is not None}

    def create(self, name: str, role: Role) -> str:
        """Make the token ``name``; its whole text, which is never kept and never shown again."""
        if not NAME.fullmatch(name):
            raise BadRequest(f"Invalid token name {name!r}: letters, digits, '_' and '-', "
                             "at most 64")
        if name == POOL:
            raise BadRequest(f"Token name {name} is reserved: audit lines name the pool's "
                             "shared token so")
        secret = secrets.token_urlsafe(32)
        record = _Record(TokenInfo(name, role, time.time()), _digest(secret))
        with self._lock:
            if name in self._tokens:
                raise Conflict(f"Token {name} exists")
            if len(self._tokens) >= MAX_TOKENS:
                raise Conflict(f"Too many tokens (at most {MAX_TOKENS})")
            self._records.write(name, _to_sxp(record))
            self._tokens[name] = record
        return f"{name}.{secret}"

    def delete(self, name: str) -> None:
        with self._lock:
            if self._tokens.pop(name, None) is None:
                raise NotFound(f"No such token: {name}")
            self._records.delete(name)
        self._revocations.revoke(_credential(name))

    def info(self, name: str) -> TokenInfo:
        with self._lock:
            record = self._tokens.get(name)
        if record is None:
            raise NotFound(f"No such token: {name}")
        return record.info

    def infos(self) -> list[TokenInfo]:
        with self._lock:
            return sorted((r.info for r in self._tokens.values()), key=lambda i: i.name)

    def principal(self, token: str) -> Principal | None:
        """Who ``token`` stands for; None for a malformed, unknown or wrong one."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        name, dot, secret = token.partition(".")
        if not dot or not NAME.fullmatch(name):
            return None
        with self._lock:
            record = self._tokens.get(name)
        # Compared even for an unknown name, so timing tells nothing of which names exist.
        expected = record.digest if record is not None else _digest("")
        if not hmac.compare_digest(_digest(secret), expected) or record is None:
            return None
        return Principal(name, record.info.role, Via.TOKEN, _credential(name))


def _credential(name: str) -> str:
    return f"token {name}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _to_sxp(record: _Record) -> sxp.Value:
    return [*record.info.sxpr(), ["sha256", record.digest]]


def _from_sxp(value: sxp.Value) -> _Record | None:
    try:
        info = TokenInfo(str(sxp.child_value(value, "name")),
                         Role(sxp.child_value(value, "role")),
                         float(str(sxp.child_value(value, "created"))))
        digest = str(sxp.child_value(value, "sha256"))
    except ValueError:
        return None
    if not NAME.fullmatch(info.name) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None
    return _Record(info, digest)
