"""A xend's pool, opened from its config: the etcd client, the name claims the table
asks (with the fencing watchdog that guards the HA domains' names), the pool's shared
token, and what this member tells the others about itself."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from xend_actors.access.pool_token import PoolToken, read_pool_token
from xend_actors.access.tls import listener_certificate
from xend_actors.config import ConfigError, XendConfig
from xend_actors.errors import XendError
from xend_actors.pool.entries import Keys
from xend_actors.pool.etcd import Etcd
from xend_actors.pool.member import Membership
from xend_actors.pool.names import EtcdNames
from xend_actors.pool.watchdog_client import FenceWatchdog


@dataclass(frozen=True)
class Pool:
    """An opened pool: its etcd, its keys, this member's name and its name claims."""

    etcd: Etcd
    keys: Keys
    me: str
    names: EtcdNames
    token: PoolToken | None = None  # the pool's shared API token; None: none configured


def open_pool(config: XendConfig) -> Pool | None:
    """The pool ``config`` names, or None (a xend on its own). Connects to nothing yet;
    a token file that is not fit to hold the pool's secret stops it (``PoolTokenError``)."""
    if not config.pool:
        return None
    token = read_pool_token(config.pool_token_file) if config.pool_token_file else None
    https = [url for url in config.pool_etcd if url.startswith("https:")]
    files = (config.pool_etcd_ca, config.pool_etcd_cert, config.pool_etcd_key)
    if https and len(https) != len(config.pool_etcd):
        raise ConfigError("(xend-pool-etcd '...') mixes http and https URLs: the members "
                          "of one etcd cluster speak either")
    if https and None in files[:2]:
        raise ConfigError("https etcd URLs need (xend-pool-etcd-ca FILE), the CA that "
                          "signed the cluster's certificates, and (xend-pool-etcd-cert FILE) "
                          "with (xend-pool-etcd-key FILE), this xend's client certificate")
    if not https and any(files):
        raise ConfigError("(xend-pool-etcd-ca/-cert/-key FILE) are for https etcd URLs; "
                          "(xend-pool-etcd '...') gives http ones")
    try:
        etcd = Etcd(config.pool_etcd, ca=config.pool_etcd_ca, cert=config.pool_etcd_cert,
                    key=config.pool_etcd_key)
    except XendError as error:  # a TLS file that cannot be used
        raise ConfigError(error.message) from None
    keys = Keys(config.pool)
    me = config.pool_host or socket.gethostname().split(".")[0]
    return Pool(etcd, keys, me, EtcdNames(etcd, keys, me, FenceWatchdog(config)), token)


def membership(config: XendConfig, pool: Pool, addresses: list[str]) -> Membership:
    """What this member registers: its API's URL (``xend-pool-address``, else the TCP
    listener's when it listens on one address) and its certificate's fingerprint."""
    api = config.pool_address
    if not api:
        tcp = [a for a in addresses if a.startswith(("http://", "https://"))]
        host = urlsplit(tcp[0]).hostname if tcp else None
        if not tcp or host in (None, "0.0.0.0", "::"):
            raise ConfigError("a pool member needs (xend-pool-address URL): the URL other "
                              "members reach this xend's API at (xend listens on every "
                              "address, or on none)")
        api = tcp[0]
    certificate = listener_certificate(config)
    fingerprint = certificate.fingerprint() if certificate is not None else ""
    return Membership(pool.keys, pool.me, api, fingerprint, config.pool_ttl,
                      relocation_address(config, api), config.build_timeout,
                      config.destroy_timeout, config.run_dir)


def relocation_address(config: XendConfig, api: str) -> str:
    """Where other members migrate domains to this one (``host:port``), or '' when it
    takes no migrations: the relocation server's own address if it listens on one,
    else the host of the API's URL."""
    if not config.relocation_server:
        return ""
    host = config.relocation_address
    if host in ("", "0.0.0.0", "::"):
        host = urlsplit(api).hostname or ""
    if not host:
        return ""
    return f"[{host}]:{config.relocation_port}" if ":" in host else \
        f"{host}:{config.relocation_port}"
