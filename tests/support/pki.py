"""A small PKI for tests: a certificate authority and the certificates it signs, as PEM
files a xend's config names (``xend-relocation-tls-cert``, ``-key``, ``-ca``).

Keys are ECDSA P-256 (made in a millisecond); certificates last a day.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, and the CA that signed it, as files."""

    cert: Path
    key: Path
    ca: Path

    def relocation_config(self) -> str:
        """The config lines that make a xend present this certificate and trust the CA."""
        return (f"(xend-relocation-tls-cert {self.cert})\n"
                f"(xend-relocation-tls-key {self.key})\n"
                f"(xend-relocation-tls-ca {self.ca})\n")

    @contextmanager
    def replaced_by(self, other: Issued) -> Iterator[None]:
        """This certificate's files hold ``other``'s certificate and key meanwhile (xend
        reads them for each connection), then their own again."""
        kept = self.cert.read_bytes(), self.key.read_bytes()
        shutil.copyfile(other.cert, self.cert)
        shutil.copyfile(other.key, self.key)
        try:
            yield
        finally:
            self.cert.write_bytes(kept[0])
            self.key.write_bytes(kept[1])


class Authority:
    """A CA whose files live in ``folder``; ``issue`` signs certificates beside them."""

    def __init__(self, folder: Path, name: str = "xend test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(self._name).issuer_name(self._name)
                .public_key(self._key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                    self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        self._cert = cert
        self.ca = folder / "ca.pem"
        self.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> Issued:
        """A certificate with common name ``name`` and these IP and DNS subjectAltNames,
        good for both ends of a TLS connection; its files are ``name``.pem and .key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        alt += [x509.DNSName(host) for host in dns]
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self._name)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + LIFETIME)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self._key.public_key()), critical=False))
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.folder / f"{name}.pem", self.folder / f"{name}.key", self.ca)
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.touch(mode=0o600)
        issued.key.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return issued
