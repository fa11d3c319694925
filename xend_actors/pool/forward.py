"""Forwarding a request to another member of the pool, with the pool's token.

A member's API is reached at the URL it registered (``HostEntry.api``) and trusted by
the certificate fingerprint it registered with it: over HTTPS the certificate is fetched
first, unverified, and the request goes only if its SHA-256 is the registered one, so
the pool's token never reaches an impostor. Plain HTTP carries the token only to a
member that registered no fingerprint AND whose API is on a loopback address (members
of one test host); any other member that speaks plain HTTP is refused (502).

The member's answer (its status, its SXP body, its Location) is given back as it came,
for the caller to pass on (``web/pool_ops.py``). A member that cannot
be reached (refused, cut off, no answer to the connection within the request's time)
is a 502 naming it; one that took the request and did not answer in time is a 504
(the request may still be running there).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import ssl
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from xend_actors.access.pool_token import ON_BEHALF
from xend_actors.errors import BadGateway, Timeout
from xend_actors.pool.entries import HostEntry

MAX_REPLY = 1 << 20  # bytes: as much as xend takes in a request's body
MIN_TIMEOUT = 1.0  # seconds: even a request at its deadline gives the member this long


@dataclass(frozen=True)
class Forwarded:
    """What the member answered."""

    status: int
    body: bytes  # SXP, as asked
    location: str | None


def forward(member: HostEntry, path: str, fields: dict[str, str], token: str, *,
            timeout: float, on_behalf: str = "") -> Forwarded:
    """POST ``fields`` to ``path`` of ``member``'s API with ``token``, saying whom this
    member acts for (``on_behalf``: shown in that member's audit trail); its answer."""
    parts = urlsplit(member.api)
    host, port = parts.hostname, parts.port
    name = f"pool member {member.host} ({member.api})"
    if not host or parts.scheme not in ("http", "https"):
        raise BadGateway(f"{name}: not an http(s) URL")
    timeout = max(MIN_TIMEOUT, timeout)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        if not member.fingerprint:
            raise BadGateway(f"{name} registered no certificate fingerprint to trust it by")
        connection = http.client.HTTPSConnection(host, port or 443, timeout=timeout,
                                                 context=_unverified())
    else:
        if member.fingerprint or not _loopback(host):
            raise BadGateway(f"{name} speaks plain HTTP: the pool's token goes over HTTPS "
                             "only (or to a loopback address)")
        connection = http.client.HTTPConnection(host, port or 80, timeout=timeout)
    body = urlencode(fields).encode()
    try:
        try:
            connection.connect()
        except TimeoutError:
            raise BadGateway(f"{name} did not answer within {timeout:.0f} s") from None
        if isinstance(connection.sock, ssl.SSLSocket):
            _check_pin(connection.sock, member, name)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/sxp",
                   "Content-Type": "application/x-www-form-urlencoded"}
        if on_behalf:
            headers[ON_BEHALF] = on_behalf
        connection.request("POST", path, body, headers)
        reply = connection.getresponse()
        data = reply.read(MAX_REPLY + 1)
    except TimeoutError:
        raise Timeout(f"{name} took the request but gave no answer within {timeout:.0f} s; "
                      "it may still be doing it: ask it") from None
    except (OSError, http.client.HTTPException) as error:
        raise BadGateway(f"{name} did not answer: {error}") from None
    finally:
        connection.close()
    if len(data) > MAX_REPLY:
        raise BadGateway(f"{name} answered more than {MAX_REPLY} bytes")
    return Forwarded(reply.status, data, reply.getheader("Location"))


def _unverified() -> ssl.SSLContext:
    """A context that lets any certificate through: the pin is checked before a request."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _check_pin(sock: ssl.SSLSocket, member: HostEntry, name: str) -> None:
    der = sock.getpeercert(binary_form=True)
    found = ":".join(f"{b:02X}" for b in hashlib.sha256(der or b"").digest())
    if found != member.fingerprint.upper():
        raise BadGateway(f"{name} presented a certificate ({found}) that is not the one it "
                         f"registered ({member.fingerprint}): not sent")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
