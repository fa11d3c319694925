"""The HTTP under etcd3gw: kept-alive ``http.client`` connections, one a thread, in
place of its default ``requests.Session``.

etcd3gw asks its session only to ``post`` JSON and to answer with a status, a reason,
a text and ``json()``. ``requests`` did that for some 0.85 ms of CPU a call, most of a
name claim's cost on a create's way; ``http.client`` on a kept-alive connection does it
for 0.17 ms (measured on one etcd on loopback). Failures are raised as the ``requests``
exceptions etcd3gw maps to its own (``ConnectionFailedError``, ``ConnectionTimeoutError``),
as ``Unanswered``: what the pool's client reads to tell a member that is down (refused,
no route, gone mid-way, a TLS handshake that failed) from one that may answer in a
moment (timed out: cut off, or waiting for a new leader).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

MAX_REPLY = 16 * 1024 * 1024  # bytes: a pool of 10,000 domains' summaries is some 2 MiB


class Unanswered(requests.exceptions.ConnectionError):
    """A post that got no reply; ``down``: the member cannot answer now (refused, no
    route, closed, TLS failed), else it did not answer in time."""

    def __init__(self, reason: str, down: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.down = down


class TimedOut(Unanswered, requests.exceptions.Timeout):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, down=False)


class Reply:
    """What etcd3gw reads of a reply."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class GatewaySession:
    """Posts to one etcd member's gateway; thread-safe (a connection a thread)."""

    def __init__(self, base_url: str, context: ssl.SSLContext | None) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 2379
        self._context = context
        self._local = threading.local()

    def post(self, url: str, *, json: Any = None, data: str | bytes | None = None,
             timeout: float | None = None, **_: Any) -> Reply:
        body = data if data is not None else _dumps(json)
        if isinstance(body, str):
            body = body.encode()
        path = urlsplit(url).path
        for attempt in (0, 1):
            connection, reused = self._connection(timeout)
            try:
                connection.request("POST", path, body=body,
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read(MAX_REPLY + 1)
            except TimeoutError:
                self._drop()
                raise TimedOut("timed out") from None
            except (OSError, http.client.HTTPException) as error:
                self._drop()
                # a kept-alive connection the member closed meanwhile: once more, anew
                if reused and attempt == 0 and isinstance(
                        error, (http.client.RemoteDisconnected, BrokenPipeError,
                                ConnectionResetError)):
                    continue
                raise Unanswered(_why(error), down=True) from None
            if len(payload) > MAX_REPLY:
                self._drop()
                raise Unanswered(f"a reply over {MAX_REPLY} bytes", down=True)
            return Reply(response.status, response.reason, payload)
        raise AssertionError("unreachable")

    def get(self, url: str, **kwargs: Any) -> Reply:
        raise requests.exceptions.ConnectionError("xend sets the API path; no GET is made")

    def _connection(self, timeout: float | None) -> tuple[http.client.HTTPConnection, bool]:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection",
                                                                None)
        if connection is not None:
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            return connection, True
        if self._context is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        else:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                     context=self._context)
        self._local.connection = connection
        return connection, False

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _why(error: OSError | http.client.HTTPException) -> str:
    """Why a member did not answer, as an operator reads it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"its certificate does not verify ({error.verify_message}): is it signed "
                f"by xend-pool-etcd-ca, for the URL's host?")
    if isinstance(error, ssl.SSLError):
        reason = (error.reason or str(error)).lower().replace("_", " ")
        # etcd (Go) refuses a client certificate its CA did not sign with an alert, or
        # hangs up without one
        if "alert" in reason or isinstance(error, ssl.SSLEOFError):
            return ("TLS refused: does the cluster's CA sign this xend's client "
                    "certificate (xend-pool-etcd-cert)?")
        return f"TLS failed: {reason}"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, http.client.HTTPException | ConnectionResetError | BrokenPipeError):
        return "closed the connection"
    return error.strerror or str(error)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
