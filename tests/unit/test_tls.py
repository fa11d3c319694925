"""Which certificate xend's listener serves per (xend-tls), the self-signed one it makes,
fingerprints on both sides, and the rule that keeps plain HTTP on loopback."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from xend_actors.access.tls import (
    Certificate,
    check_exposure,
    fingerprint,
    listener_certificate,
    make_self_signed,
    self_signed,
)
from xend_actors.client import XendClient
from xend_actors.config import parse_config
from xend_actors.errors import XendError


def test_which_certificate_each_mode_serves(tmp_path: Path) -> None:
    db = f"(dbroot {tmp_path})\n"
    given = "(xend-tls-cert /etc/c.pem)\n(xend-tls-key /etc/k.pem)\n"
    mine = Certificate(Path("/etc/c.pem"), Path("/etc/k.pem"))
    assert listener_certificate(parse_config(db)) is None  # auto, nothing given: plain
    assert listener_certificate(parse_config(db + given)) == mine
    assert listener_certificate(parse_config(db + "(xend-tls yes)\n" + given)) == mine
    assert listener_certificate(parse_config(db + "(xend-tls yes)\n")) == Certificate(
        tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    assert listener_certificate(parse_config(db + "(xend-tls no)\n" + given)) is None
    with pytest.raises(XendError, match="go together"):
        listener_certificate(parse_config(db + "(xend-tls-key /etc/k.pem)\n"))


def test_the_self_signed_certificate_names_this_host_and_is_kept(tmp_path: Path) -> None:
    where = self_signed(tmp_path)
    make_self_signed(where, "xend.example")
    assert where.key.stat().st_mode & 0o777 == 0o600
    assert where.cert.stat().st_mode & 0o777 == 0o644
    cert = x509.load_pem_x509_certificate(where.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "xend.example"} <= set(names.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days > 9 * 365
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(where.cert, where.key)  # the key is the certificate's

    before = where.cert.read_bytes(), where.key.read_bytes()
    make_self_signed(where, "another.example")
    assert (where.cert.read_bytes(), where.key.read_bytes()) == before

    other = self_signed(tmp_path / "other")
    make_self_signed(other, "10.1.2.3")
    names = x509.load_pem_x509_certificate(other.cert.read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in names.get_values_for_type(x509.IPAddress)


def test_fingerprints_agree_with_the_der_bytes(tmp_path: Path) -> None:
    where = self_signed(tmp_path)
    make_self_signed(where, "")
    pem = where.cert.read_text()
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    assert fingerprint(pem.encode()).replace(":", "") == digest
    assert where.fingerprint() == fingerprint(pem.encode())
    with pytest.raises(XendError, match="not a PEM certificate"):
        Certificate(where.key, where.key).fingerprint()


@pytest.mark.parametrize("pin", ["ab" * 32, "AB:" * 31 + "AB", " ".join(["AB"] * 32)])
def test_the_client_takes_a_fingerprint_in_any_case_with_or_without_colons(pin: str) -> None:
    client = XendClient("https://127.0.0.1:1", fingerprint=pin)  # no connection yet
    assert client._pin == "AB:" * 31 + "AB"  # the form xend status prints, to compare with


@pytest.mark.parametrize("pin", ["AB:CD", "ZZ" * 32, "AB" * 33])
def test_the_client_refuses_what_is_not_a_fingerprint(pin: str) -> None:
    with pytest.raises(XendError, match="not a SHA-256 fingerprint"):
        XendClient("https://127.0.0.1:1", fingerprint=pin)


def test_plain_http_stays_on_loopback_unless_the_config_says_no(
        caplog: pytest.LogCaptureFixture) -> None:
    auto = parse_config("(xend-address '')\n")
    for loopback in ("127.0.0.1", "127.9.9.9", "::1"):
        check_exposure(auto, loopback, tls=False)
    check_exposure(auto, "0.0.0.0", tls=True)
    for exposed, said in (("0.0.0.0", "every address"), ("::", "every address"),
                          ("192.0.2.7", "192.0.2.7")):
        with pytest.raises(XendError, match=rf"listens on {said}, which is not loopback"):
            check_exposure(auto, exposed, tls=False)
    with caplog.at_level(logging.WARNING):
        check_exposure(parse_config("(xend-tls no)\n"), "192.0.2.7", tls=False)
    assert "(xend-tls no): plain HTTP on 192.0.2.7" in caplog.text
