"""Mutual TLS between xends on the relocation port: the contexts of both ends, the
names a peer's certificate proves, and how a TLS failure reads.

Both xends present a certificate (``xend-relocation-tls-cert``, ``-key``) signed by the
CA of ``xend-relocation-tls-ca``, and each requires the other's. The destination (the
relocation server) matches the source certificate's names against
``xend-relocation-hosts-allow`` (``Relocation``); the source checks that the
destination's certificate names the host it dialed (a DNS or IP subjectAltName), as a
browser does. Without the three files a relocation server does not start and a source
does not migrate, unless the config says ``(xend-relocation-tls no)``: plain TCP, as
the original.

The files are read again for each connection, so renewed certificates take effect
without a restart (and files that do not load fail xend's start). A server's handshake
runs on the connection's own thread, bounded by ``HANDSHAKE_TIMEOUT``, so a peer that
never finishes it holds up nobody else. Over TLS a stream's bytes pass through OpenSSL
(``Channel``): the kernel's ``splice`` cannot encrypt them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xend_actors.config import XendConfig
from xend_actors.errors import XendError
from xend_actors.transfer.xfr.messages import Code, XfrError

HANDSHAKE_TIMEOUT = 5.0
DRAIN_TIMEOUT = 1.0  # for a refused peer to read why and hang up


@dataclass(frozen=True)
class Files:
    """This xend's certificate and key, and the CA its peers' certificates verify against."""

    cert: Path
    key: Path
    ca: Path


def files(config: XendConfig, who: str) -> Files | None:
    """The TLS files ``config`` names, once they load; None for ``(xend-relocation-tls
    no)``. When TLS is on without all three, a XendError says which are missing and that
    ``who`` needs them."""
    if not config.relocation_tls:
        return None
    cert, key, ca = config.relocation_tls_cert, config.relocation_tls_key, config.relocation_tls_ca
    if cert is None or key is None or ca is None:
        missing = [f"({option} PATH)" for option, path in (
            ("xend-relocation-tls-cert", cert), ("xend-relocation-tls-key", key),
            ("xend-relocation-tls-ca", ca)) if path is None]
        raise XendError(f"{who} needs mutual TLS between xends, and the config does not say "
                        f"{' '.join(missing)}; give them, or say (xend-relocation-tls no) "
                        "for plain TCP")
    found = Files(cert, key, ca)
    server_context(found)
    return found


def server_context(files: Files) -> ssl.SSLContext:
    """The relocation server's: it requires a client certificate the CA signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    return _load(context, files)


def client_context(files: Files) -> ssl.SSLContext:
    """A source's: it checks the destination's certificate and host name (IP SANs too)."""
    return _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), files)


def _load(context: ssl.SSLContext, files: Files) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as error:
        raise XendError(f"xend-relocation-tls-cert {files.cert} with -key {files.key}: "
                        f"{reason(error)}") from None
    try:
        context.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as error:
        raise XendError(f"xend-relocation-tls-ca {files.ca}: {reason(error)}") from None
    return context


def accept(files: Files, sock: socket.socket) -> ssl.SSLSocket:
    """``sock``, a new relocation client, once its TLS handshake is done (at most
    ``HANDSHAKE_TIMEOUT`` s) and its certificate verified; else XfrError, ``sock`` closed."""
    try:
        secured = server_context(files).wrap_socket(sock, server_side=True,
                                                    do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    secured.settimeout(HANDSHAKE_TIMEOUT)
    try:
        secured.do_handshake()
    except OSError as error:
        close_gently(secured)
        raise failure("the TLS handshake failed", error) from None
    return secured


def close_gently(sock: socket.socket) -> None:
    """Close ``sock``, refusing its peer, once the peer has closed too (or after
    ``DRAIN_TIMEOUT``): closed with unread bytes, the kernel would reset the connection,
    and the peer could lose the alert or the ``(xfr.err ...)`` that says why. (TLS 1.3
    lets a client send before it learns its certificate was refused.) Over TLS, what
    comes after is read raw and dropped."""
    with contextlib.suppress(OSError), sock:
        sock.shutdown(socket.SHUT_WR)  # an SSLSocket then reads the raw bytes
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(4096):
                return


def connect(files: Files | None, host: str, port: int, timeout: float) -> socket.socket:
    """A connection to the relocation port at ``host``:``port``: over TLS with ``files``
    (the handshake done, the peer's certificate checked against the CA and ``host``), or
    plain TCP without."""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        raise XfrError(f"cannot connect to the relocation port {where}: "
                       f"{error.strerror or error}") from None
    if files is None:
        return sock
    try:
        return client_context(files).wrap_socket(sock, server_hostname=host)
    except BaseException as error:
        sock.close()
        if isinstance(error, OSError):
            raise failure(f"the TLS handshake with the relocation port {where} failed",
                          error) from None
        raise


def names(cert: dict[str, Any]) -> list[str]:
    """The names a verified peer certificate (``getpeercert()``) proves: its DNS and IP
    subjectAltNames, then its subject's commonName."""
    found = []
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            found.append(value)
        elif kind == "IP Address":
            try:
                found.append(str(ipaddress.ip_address(value.strip())))
            except ValueError:
                continue
    found += [value for rdn in cert.get("subject", ()) for key, value in rdn
              if key == "commonName"]
    return found


def reason(error: OSError) -> str:
    """Why a TLS operation failed, in words (OpenSSL's reason without its file and line)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError) and error.reason:
        words = error.reason.lower().replace("_", " ")
        return f"refused by the peer ({words})" if "alert" in words else words
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return error.strerror or str(error) or type(error).__name__


def failure(what: str, error: OSError) -> XfrError:
    """``what`` failed because of ``error``: a certificate refused (either end) is 403."""
    if isinstance(error, ssl.SSLCertVerificationError) or (
            isinstance(error, ssl.SSLError) and "ALERT" in (error.reason or "")):
        code = Code.EACCES
    elif isinstance(error, TimeoutError):
        code = Code.ETIMEDOUT
    else:
        code = Code.EIO
    return XfrError(f"{what}: {reason(error)}", code)


@dataclass(frozen=True)
class Dialer:
    """How this xend reaches other xends' relocation ports: over mutual TLS with
    ``files``, over plain TCP when it is None, or not at all: ``refusal`` says why."""

    files: Files | None = None
    refusal: str = ""

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        if self.refusal:
            raise XfrError(self.refusal)
        return connect(self.files, host, port, timeout)


def dialer(config: XendConfig) -> Dialer:
    """The Dialer ``config`` makes. A xend without the TLS files still starts (it may
    never migrate a domain); its migrations are refused, saying why."""
    try:
        return Dialer(files(config, "migrating a domain to another xend"))
    except XendError as error:
        if config.relocation_tls_cert or config.relocation_tls_key or config.relocation_tls_ca:
            raise  # some given, and wrong: the operator meant TLS, and should know now
        return Dialer(refusal=error.message)
