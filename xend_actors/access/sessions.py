"""Browser sessions: the cookie a PAM login earns, and who it stands for, until it expires.

Sessions live in memory only: a restart of xend logs every browser out, which is the
safe side. A session id is 32 random bytes (URL-safe base64); only its SHA-256 is kept,
so a memory dump of xend does not hand out live cookies. The number of live sessions is
bounded; the oldest goes first.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from xend_actors.access.identity import Principal
from xend_actors.access.revocations import Revocations

COOKIE = "xend_session"
MAX_SESSIONS = 1024
MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class Session:
    principal: Principal
    expires: float  # on the clock Sessions was given (monotonic by default)


class Sessions:
    """Thread-safe: the gate's threads look sessions up while a login adds one."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic,
                 revocations: Revocations | None = None) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._revocations = revocations or Revocations()
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, principal: Principal) -> str:
        """A new session for ``principal``; its id, to be sent once as the cookie."""
        session_id = secrets.token_urlsafe(32)
        key = _digest(session_id)
        principal = replace(principal, credential=_credential(key))
        with self._lock:
            self._sessions[key] = Session(principal, self._clock() + self.lifetime)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id

    def principal(self, session_id: str) -> Principal | None:
        """Who the session ``session_id`` stands for; None if unknown or expired."""
        if not session_id or len(session_id) > MAX_ID_LENGTH:
            return None
        key = _digest(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires > self._clock():
                return session.principal
            del self._sessions[key]
        self._revocations.revoke(_credential(key))  # what it held open ends with it
        return None

    def close(self, session_id: str) -> None:
        """End the session (a logout); an unknown id is no error."""
        if session_id and len(session_id) <= MAX_ID_LENGTH:
            key = _digest(session_id)
            with self._lock:
                closed = self._sessions.pop(key, None)
            if closed is not None:
                self._revocations.revoke(_credential(key))


def _credential(key: str) -> str:
    return f"session {key[:16]}"


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
