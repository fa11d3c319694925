"""A pool's config, opened (pool/opening.py): https etcd URLs need the CA and this xend's
client certificate, as files it can use; a mistake stops xend at start with one line that
names the option, before anything is asked of etcd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pki import Authority, Issued
from xend_actors.config import ConfigError, parse_config
from xend_actors.pool.opening import open_pool

HTTPS = "(xend-pool p)\n(xend-pool-etcd 'https://10.0.0.1:2379 https://10.0.0.2:2379')\n"


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    return Authority(tmp_path_factory.mktemp("ca")).issue("xend")


def files(ca: Path, cert: Path, key: Path) -> str:
    return (f"(xend-pool-etcd-ca {ca})\n(xend-pool-etcd-cert {cert})\n"
            f"(xend-pool-etcd-key {key})\n")


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as error:
        open_pool(parse_config(text))
    assert "\n" not in error.value.message
    return error.value.message


def test_a_pool_on_tls_opens_with_its_files(issued: Issued) -> None:
    pool = open_pool(parse_config(HTTPS + files(issued.ca, issued.cert, issued.key)))
    assert pool is not None and pool.etcd.urls == ("https://10.0.0.1:2379",
                                                   "https://10.0.0.2:2379")


def test_https_urls_without_the_ca_or_the_certificate_stop_xend(issued: Issued) -> None:
    for given in ("", f"(xend-pool-etcd-ca {issued.ca})\n",
                  f"(xend-pool-etcd-cert {issued.cert})\n(xend-pool-etcd-key {issued.key})\n"):
        assert refused(HTTPS + given) == (
            "https etcd URLs need (xend-pool-etcd-ca FILE), the CA that signed the cluster's "
            "certificates, and (xend-pool-etcd-cert FILE) with (xend-pool-etcd-key FILE), "
            "this xend's client certificate")


def test_tls_files_for_http_urls_or_mixed_urls_stop_xend(issued: Issued) -> None:
    plain = "(xend-pool p)\n(xend-pool-etcd 'http://10.0.0.1:2379')\n"
    assert "are for https etcd URLs" in refused(plain + f"(xend-pool-etcd-ca {issued.ca})\n")
    mixed = "(xend-pool p)\n(xend-pool-etcd 'https://10.0.0.1:2379 http://10.0.0.2:2379')\n"
    assert "mixes http and https URLs" in refused(
        mixed + files(issued.ca, issued.cert, issued.key))


def test_files_that_cannot_be_used_are_named(issued: Issued, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert refused(HTTPS + files(missing, issued.cert, issued.key)) == (
        f"(xend-pool-etcd-ca {missing}): cannot read it: No such file or directory")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert refused(HTTPS + files(garbage, issued.cert, issued.key)).startswith(
        f"(xend-pool-etcd-ca {garbage}): not a PEM certificate")
    assert refused(HTTPS + files(issued.ca, missing, issued.key)) == (
        f"(xend-pool-etcd-cert {missing}) with (xend-pool-etcd-key {issued.key}): "
        "cannot read it: No such file or directory")
    other = Authority(tmp_path / "other").issue("other")
    assert refused(HTTPS + files(issued.ca, issued.cert, other.key)).startswith(
        f"(xend-pool-etcd-cert {issued.cert}) with (xend-pool-etcd-key {other.key}): "
        "not a PEM certificate (and key) that fit: ")
