"""Revocations: a deleted token or a closed session ends what it still holds open.

Credentials are checked when a request comes in; a console's WebSocket, once open, makes
no more requests. So whoever holds something open on a principal's behalf listens here,
and the keys (``tokens.py``, ``sessions.py``) say when a credential stops counting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[[str], None]


class Revocations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call ``listener(credential)`` whenever a credential is revoked."""
        with self._lock:
            self._listeners.append(listener)

    def revoke(self, credential: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(credential)
            except Exception:
                log.exception("Ending what %s held open failed", credential)
