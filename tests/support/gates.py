"""The HTTP gate around an app for in-process tests: the real ``Gate`` on a TCP door."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from wsgiref.types import WSGIApplication

from xend_actors.access.ratelimit import FailureLimiter
from xend_actors.access.sessions import Sessions
from xend_actors.access.tokens import Tokens
from xend_actors.config import XendConfig
from xend_actors.store import RecordDir
from xend_actors.web.gate import Door, Gate, Keys


def new_keys(folder: Path | None = None) -> Keys:
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="xend-keys-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the tests leave no trace
    return Keys(Tokens(RecordDir(folder / "token")), Sessions(3600.0), FailureLimiter())


def open_gate(app: WSGIApplication) -> Gate:
    """``app`` behind the gate of ``(xend-http-auth no)``: every client is an admin, as in
    the original; for tests of what the app does once a client is let in."""
    return Gate(app, Door.TCP, replace(XendConfig(), http_auth=False), new_keys())
