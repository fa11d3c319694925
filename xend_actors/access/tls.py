"""TLS of xend's HTTP listener: which certificate it serves, the self-signed one xend makes
when told to and given none, a certificate's fingerprint, and the rule that plain HTTP
stays on loopback.

``(xend-tls auto)`` (the default) serves TLS when ``xend-tls-cert`` and ``xend-tls-key``
are configured; ``(xend-tls yes)`` always does, with a self-signed certificate made at
the first start under ``<dbroot>/tls/`` and kept (so its fingerprint, which clients pin,
stays the same); ``(xend-tls no)`` never does. Plain HTTP on an address that is not
loopback would give every token and login to the network in clear text: xend refuses to
start so unless the config says ``(xend-tls no)`` in so many words.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xend_actors.access.hosts import is_local
from xend_actors.config import TlsMode, XendConfig
from xend_actors.errors import XendError
from xend_actors.store import atomic_write

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

SELF_SIGNED_DIR = "tls"  # under dbroot
VALID_DAYS = 10 * 365
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Certificate:
    """A certificate (PEM, the chain after it if any) and its private key, as files."""

    cert: Path
    key: Path

    def fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint, ``AA:BB:...``; XendError if unreadable."""
        try:
            return fingerprint(self.cert.read_bytes())
        except OSError as error:
            raise XendError(f"cannot read {self.cert}: {error.strerror}") from None
        except XendError as error:
            raise XendError(f"{self.cert}: {error.message}") from None


def self_signed(dbroot: Path) -> Certificate:
    """Where the self-signed certificate of ``(xend-tls yes)`` lives."""
    folder = dbroot / SELF_SIGNED_DIR
    return Certificate(folder / "cert.pem", folder / "key.pem")


def listener_certificate(config: XendConfig) -> Certificate | None:
    """The certificate the TCP listener serves; None for plain HTTP. Touches no file."""
    if config.tls is TlsMode.NO:
        return None
    if config.tls_cert is None and config.tls_key is None:
        return self_signed(config.dbroot) if config.tls is TlsMode.YES else None
    if config.tls_cert is None or config.tls_key is None:
        raise XendError("(xend-tls-cert PATH) and (xend-tls-key PATH) go together: "
                        "the config names only one")
    return Certificate(config.tls_cert, config.tls_key)


def server_context(config: XendConfig) -> ssl.SSLContext | None:
    """The TLS context of the TCP listener, None for plain HTTP. The self-signed
    certificate is made here the first time it is needed."""
    certificate = listener_certificate(config)
    if certificate is None:
        return None
    if certificate == self_signed(config.dbroot):
        make_self_signed(certificate, config.http_address)
    for option, path in (("xend-tls-cert", certificate.cert), ("xend-tls-key", certificate.key)):
        try:
            path.read_bytes()
        except OSError as error:
            raise XendError(f"({option} {path}): cannot read it: {error.strerror}") from None

    def no_passphrase() -> bytes:
        raise XendError(f"(xend-tls-key {certificate.key}) is encrypted: xend needs a key "
                        "without a passphrase (it starts unattended)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate.cert, certificate.key, password=no_passphrase)
    except ssl.SSLError as error:
        raise XendError(f"(xend-tls-cert {certificate.cert}) with (xend-tls-key "
                        f"{certificate.key}): not a PEM certificate and its key "
                        f"({error.reason or error})") from None
    return context


def make_self_signed(where: Certificate, address: str) -> None:
    """Make the self-signed certificate and key, unless both exist already (then they
    are kept: clients pin the certificate's fingerprint)."""
    if where.cert.exists() and where.key.exists():
        return
    # Here and in fingerprint, not at the top: cryptography (50 modules, some 10 MiB) is
    # needed only for TLS, and a xend serving plain HTTP never loads it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"xend on {host}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    no_uses = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment",
                             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only",
                             "decipher_only"), False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(host, address)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, **no_uses), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a certificate on disk always has its key beside it.
    atomic_write(where.key, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), mode=0o600)
    atomic_write(where.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    log.info("Made a self-signed TLS certificate: %s", where.cert)


def _names(host: str, address: str) -> list[x509.GeneralName]:
    """The certificate's subject alternative names: loopback, this host's name and the
    listener's address (an IP or a name; '' is every address and names none)."""
    from cryptography import x509  # as in make_self_signed, its only caller

    names: list[x509.GeneralName] = []
    for name in dict.fromkeys((*LOCAL_NAMES, host, address)):
        if not name or name in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


def fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint of the (first) certificate in ``pem``, as ``AA:BB:...``."""
    from cryptography import x509  # see make_self_signed
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise XendError(f"not a PEM certificate: {error}") from None
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def check_exposure(config: XendConfig, address: str, tls: bool) -> None:
    """Refuse plain HTTP on ``address`` (where the listener is bound) unless it is
    loopback or the config says ``(xend-tls no)``."""
    if tls or is_local(address):
        return
    where = "every address" if address in ("0.0.0.0", "::") else address
    configured = config.http_address or "''"
    if config.tls is TlsMode.NO:
        log.warning("(xend-tls no): plain HTTP on %s; tokens and logins cross the network "
                    "in clear text", where)
        return
    raise XendError(
        f"(xend-address {configured}) listens on {where}, which is not "
        "loopback, without TLS: tokens and logins would cross the network in clear text. "
        "Give a certificate ((xend-tls-cert PATH) (xend-tls-key PATH)), or say (xend-tls yes) "
        "for a self-signed one, or (xend-tls no) to serve plain HTTP anyway")
