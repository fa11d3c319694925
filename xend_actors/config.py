"""The daemon's configuration: ``xend-config.sxp`` read into one frozen ``XendConfig``.

The file is a sequence of top-level ``(option value)`` forms with ``#`` comments
(xend-facts.md §3); the first occurrence of an option wins. Every option maps to
one field through the ``_OPTIONS`` table, plus ``block-<type>`` for block scripts.
A script option (``network-script``, ``vif-script``, ``block-<type>``) is a command:
the script's name, then arguments split as a shell would (``script_words``).
A value that does not convert is a ConfigError naming the option and where it is;
an unknown option is only a warning, kept in ``XendConfig.warnings`` because
logging is not set up yet when the config is read.

Every path xend uses (store, logs, run dir, sockets) comes from here, so tests and
unprivileged users can run a whole xend in a temporary folder. Paths in the file
must be absolute: the daemon changes its working folder when it detaches.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from xend_actors import sxp
from xend_actors.errors import XendError

DEFAULT_CONFIG_PATH = Path("/etc/xen/xend-config.sxp")
CONFIG_ENV = "XEND_CONFIG"


MAX_SAMPLES_KEPT = 17280  # a day at 5 s: some 200 KiB a domain


class ConfigError(XendError):
    """The config file cannot be read or has a bad value: ``<file>:<line>:<column>: <what>``."""


class TlsMode(Enum):
    """Whether the TCP HTTP listener speaks TLS: ``auto`` when a certificate is configured."""

    AUTO = "auto"
    YES = "yes"
    NO = "no"


class Hypervisor(Enum):
    """Which hypervisor driver runs the domains."""

    SIM = "sim"
    QEMU = "qemu"


@dataclass(frozen=True)
class XendConfig:
    """Everything ``xend-config.sxp`` can say, with the defaults of a file that says nothing.

    ``unix_path`` left out (None) becomes ``<run_dir>/xend.sock`` on construction; to
    move it with the run dir in ``dataclasses.replace``, pass ``unix_path=None`` too.
    """

    http_port: int = 8000
    http_address: str = ""  # '' = all addresses
    unix_server: bool = False
    unix_path: Path = None  # type: ignore[assignment]  # set in __post_init__
    unix_group: str = ""  # '' = the socket is root's alone (0600); else 0660 to this group
    unix_ro_path: Path | None = None  # a read-only socket (GETs only), for everyone
    http_auth: bool = True  # no: the original's behaviour, only xend-hosts-allow
    admin_group: str = ""  # PAM users in this group log in as admins (root always may)
    viewer_group: str = ""  # PAM users in this group log in as viewers; others may not
    session_lifetime: float = 8 * 3600.0  # seconds a browser's login lasts
    tls: TlsMode = TlsMode.AUTO
    tls_cert: Path | None = None
    tls_key: Path | None = None
    hosts_allow: tuple[re.Pattern[str], ...] = ()  # empty = every host may connect
    event_port: int = 8001
    max_connections: int = 512  # HTTP connections open at once, every door together
    max_client_connections: int = 128  # ... from one client (an address, or a Unix uid)
    max_waiting: int = 32  # long-polls and event streams waiting at once, of each kind
    read_timeout: float = 10.0  # seconds a client may keep xend waiting for its request
    keepalive_timeout: float = 15.0  # seconds an idle kept-alive HTTP connection is kept
    http_workers: int = 16  # threads answering HTTP requests (waiting ones apart)
    debug_tcp: bool = False  # the debug port on TCP too; else only <run_dir>/debug.sock
    relocation_server: bool = False
    relocation_port: int = 8002
    relocation_address: str = ""
    relocation_hosts_allow: tuple[re.Pattern[str], ...] = ()
    relocation_tls: bool = True  # mutual TLS between xends; no: plain TCP, as the original
    relocation_tls_cert: Path | None = None
    relocation_tls_key: Path | None = None
    relocation_tls_ca: Path | None = None
    console_port_base: int = 9600
    console_address: str = ""
    console_tcp: bool = False  # raw TCP console ports as the original; else only via the API
    network_script: str = "network"  # a command: the script, then its own arguments
    vif_bridge: str = "xen-br0"
    vif_script: str = "vif-bridge"
    vif_antispoof: bool = True
    block_scripts: Mapping[str, str] = field(default_factory=dict)  # type -> command; read-only
    scripts_dir: Path = Path("/etc/xen/scripts")
    dbroot: Path = Path("/var/lib/xen/xend-db")
    logfile: Path = Path("/var/log/xend.log")
    loglevel: str = "DEBUG"
    hypervisor: Hypervisor = Hypervisor.SIM
    run_dir: Path = Path("/var/run/xend")
    minimum_restart_time: float = 20.0  # seconds
    # The deadline of one request, per kind of operation (actors.Deadline): seconds.
    request_timeout: float = 10.0  # a question or a quick change (info, pause, memory)
    destroy_timeout: float = 30.0  # destroy: devices let go, their scripts run
    build_timeout: float = 120.0  # create and hot-plug: a process started, scripts run
    transfer_timeout: float = 600.0  # save, restore, migrate: a whole image moved
    sample_interval: float = 5.0  # seconds between two samples of every domain; 0: none
    sample_history: float = 3600.0  # seconds of samples kept for each domain
    sim_memory_mb: int = 8192  # the simulated host's memory, Domain-0's share included
    sim_cpus: int = 4
    sim_taps: bool = True
    qemu_accel: str = "auto"  # auto (probe KVM once per host boot), kvm or tcg
    pool: str = ""  # the pool this xend is a member of; '' = none (one host, as ever)
    pool_etcd: tuple[str, ...] = ()  # the pool's etcd client URLs
    pool_etcd_ca: Path | None = None  # TLS to etcd (https URLs): the CA, our cert and key
    pool_etcd_cert: Path | None = None
    pool_etcd_key: Path | None = None
    pool_host: str = ""  # this member's name in the pool; '' = the hostname
    pool_address: str = ""  # the API URL other members reach us at; '' = from xend-address
    pool_ttl: float = 10.0  # seconds a member's lease lives without a renewal
    pool_token_file: Path | None = None  # the pool's shared API token, for forwarded requests
    source: Path | None = None  # the file this came from
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.unix_path is None:
            object.__setattr__(self, "unix_path", self.run_dir / "xend.sock")
        object.__setattr__(self, "block_scripts", MappingProxyType(dict(self.block_scripts)))

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "xend.pid"

    @property
    def debug_socket(self) -> Path:
        return self.run_dir / "debug.sock"

    @property
    def debug_log(self) -> Path:
        """Where the detached daemon's stdout and stderr go."""
        return self.logfile.parent / "xend-debug.log"

    @property
    def trace_file(self) -> Path:
        return self.logfile.parent / "xend.trace"

    @property
    def samples_kept(self) -> int:
        """How many samples each domain's ring holds."""
        if self.sample_interval <= 0:
            return 2
        return min(MAX_SAMPLES_KEPT,
                   max(2, round(self.sample_history / self.sample_interval)))

    def script_path(self, name: str) -> Path:
        """The script called ``name``: absolute names as they are, others in ``scripts_dir``."""
        return self.scripts_dir / name


# --- converters: option text → field value; a ValueError says what was expected ------

_TRUE = ("yes", "1", "on", "true")
_FALSE = ("no", "0", "off", "false")


def _bool(text: str) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected yes or no (or 1/0, on/off, true/false), got {text!r}")


def _port(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) > 65535:
        raise ValueError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def _text(text: str) -> str:
    return text


def _name(text: str) -> str:
    if not text:
        raise ValueError("expected a name, got ''")
    return text


def script_words(command: str) -> list[str]:
    """A script option's value as a shell splits it: the script's name, then the words
    xend passes after its own (``network netdev=eth0``). ValueError if it cannot be split."""
    try:
        words = shlex.split(command)
    except ValueError as e:  # shlex says "No closing quotation" or "No escaped character"
        raise ValueError(f"cannot split {command!r} as a shell would: "
                         f"{str(e)[0].lower()}{str(e)[1:]}") from None
    if not words:
        raise ValueError(f"expected a script name, then its arguments, got {command!r}")
    return words


_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _pool_name(text: str) -> str:
    if not _POOL_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a pool or member name: use letters, digits, "
                         "'.', '_' and '-', at most 64")
    return text


def _urls(text: str) -> tuple[str, ...]:
    urls = tuple(text.split())
    for url in urls:
        if not re.fullmatch(r"https?://[A-Za-z0-9.:\[\]_-]+(:[0-9]{1,5})?/?", url):
            raise ValueError(f"{url!r} is not an etcd URL like http://10.0.0.1:2379")
    if not urls:
        raise ValueError("expected one or more URLs")
    return urls


def _pool_ttl(text: str) -> float:
    seconds = _seconds(text)
    if not 2 <= seconds <= 300:
        raise ValueError(f"{text} is not a lease TTL between 2 and 300 seconds")
    return seconds


def _command(text: str) -> str:
    script_words(text)
    return text


def _path(text: str) -> Path:
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    return Path(text)


def _patterns(text: str) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for word in text.split():
        try:
            patterns.append(re.compile(word))
        except re.error as e:
            raise ValueError(f"bad regular expression {word!r}: {e}") from None
    return tuple(patterns)


def _loglevel(text: str) -> str:
    level = text.upper()
    if level not in logging.getLevelNamesMapping():
        names = ", ".join(sorted(logging.getLevelNamesMapping()))
        raise ValueError(f"expected a logging level ({names}), got {text!r}")
    return level


def _hypervisor(text: str) -> Hypervisor:
    try:
        return Hypervisor(text)
    except ValueError:
        kinds = " or ".join(h.value for h in Hypervisor)
        raise ValueError(f"expected {kinds}, got {text!r}") from None


def _tls_mode(text: str) -> TlsMode:
    try:
        return TlsMode(text.lower())
    except ValueError:
        raise ValueError(f"expected auto, yes or no, got {text!r}") from None


def _qemu_accel(text: str) -> str:
    if text not in ("auto", "kvm", "tcg"):
        raise ValueError(f"expected auto, kvm or tcg, got {text!r}")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a number of seconds >= 0, got {text!r}")
    return seconds


def _at_least_a_second(text: str) -> float:
    seconds = _seconds(text)
    if seconds < 1:
        raise ValueError(f"expected a number of seconds >= 1, got {text!r}")
    return seconds


def _sample_interval(text: str) -> float:
    seconds = _seconds(text)
    if 0 < seconds < 0.1:
        raise ValueError(f"expected 0 (no samples) or a number of seconds >= 0.1, got {text!r}")
    return seconds


_OPTIONS: Mapping[str, tuple[str, Callable[[str], object]]] = {
    "xend-port": ("http_port", _port),
    "xend-address": ("http_address", _text),
    "xend-unix-server": ("unix_server", _bool),
    "xend-unix-path": ("unix_path", _path),
    "xend-unix-group": ("unix_group", _name),
    "xend-unix-ro-path": ("unix_ro_path", _path),
    "xend-http-auth": ("http_auth", _bool),
    "xend-admin-group": ("admin_group", _name),
    "xend-viewer-group": ("viewer_group", _name),
    "xend-session-lifetime": ("session_lifetime", _seconds),
    "xend-tls": ("tls", _tls_mode),
    "xend-tls-cert": ("tls_cert", _path),
    "xend-tls-key": ("tls_key", _path),
    "xend-hosts-allow": ("hosts_allow", _patterns),
    "xend-event-port": ("event_port", _port),
    "xend-max-connections": ("max_connections", _positive),
    "xend-max-client-connections": ("max_client_connections", _positive),
    "xend-max-waiting": ("max_waiting", _positive),
    "xend-read-timeout": ("read_timeout", _at_least_a_second),
    "xend-keepalive-timeout": ("keepalive_timeout", _at_least_a_second),
    "xend-http-workers": ("http_workers", _positive),
    "xend-debug-tcp": ("debug_tcp", _bool),
    "xend-relocation-server": ("relocation_server", _bool),
    "xend-relocation-port": ("relocation_port", _port),
    "xend-relocation-address": ("relocation_address", _text),
    "xend-relocation-hosts-allow": ("relocation_hosts_allow", _patterns),
    "xend-relocation-tls": ("relocation_tls", _bool),
    "xend-relocation-tls-cert": ("relocation_tls_cert", _path),
    "xend-relocation-tls-key": ("relocation_tls_key", _path),
    "xend-relocation-tls-ca": ("relocation_tls_ca", _path),
    "console-port-base": ("console_port_base", _port),
    "console-address": ("console_address", _text),
    "console-tcp": ("console_tcp", _bool),
    "network-script": ("network_script", _command),
    "vif-bridge": ("vif_bridge", _name),
    "vif-script": ("vif_script", _command),
    "vif-antispoof": ("vif_antispoof", _bool),
    "xend-scripts-dir": ("scripts_dir", _path),
    "dbroot": ("dbroot", _path),
    "logfile": ("logfile", _path),
    "loglevel": ("loglevel", _loglevel),
    "hypervisor": ("hypervisor", _hypervisor),
    "xend-run-dir": ("run_dir", _path),
    "minimum-restart-time": ("minimum_restart_time", _seconds),
    "request-timeout": ("request_timeout", _seconds),
    "destroy-timeout": ("destroy_timeout", _seconds),
    "build-timeout": ("build_timeout", _seconds),
    "transfer-timeout": ("transfer_timeout", _seconds),
    "sample-interval": ("sample_interval", _sample_interval),
    "sample-history": ("sample_history", _seconds),
    "sim-memory": ("sim_memory_mb", _positive),
    "sim-cpus": ("sim_cpus", _positive),
    "sim-taps": ("sim_taps", _bool),
    "qemu-accel": ("qemu_accel", _qemu_accel),
    "xend-pool": ("pool", _pool_name),
    "xend-pool-etcd": ("pool_etcd", _urls),
    "xend-pool-etcd-ca": ("pool_etcd_ca", _path),
    "xend-pool-etcd-cert": ("pool_etcd_cert", _path),
    "xend-pool-etcd-key": ("pool_etcd_key", _path),
    "xend-pool-host": ("pool_host", _pool_name),
    "xend-pool-address": ("pool_address", _text),
    "xend-pool-ttl": ("pool_ttl", _pool_ttl),
    "xend-pool-token-file": ("pool_token_file", _path),
}
_BLOCK_PREFIX = "block-"  # (block-<type> <script>): the script for uname prefix <type>:


def config_path(explicit: Path | None = None) -> Path:
    """The config file to read: ``explicit``, else ``$XEND_CONFIG``, else the default."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path | None = None) -> XendConfig:
    """Read the config file; a missing file means all defaults (and says so in warnings)."""
    path = config_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return XendConfig(warnings=(f"{path}: no such file; using the default configuration",))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_config(data, path)


def parse_config(text: str | bytes, source: Path | None = None) -> XendConfig:
    """The configuration that ``text`` (the content of ``source``) says."""
    where = str(source) if source is not None else "<config>"
    try:
        forms = sxp.parse_forms(text)
    except sxp.ParseError as e:
        raise ConfigError(f"{where}:{e.line}:{e.column}: {e.reason}") from None
    values: dict[str, object] = {}
    blocks: dict[str, str] = {}
    seen: dict[str, str] = {}  # option → where it was first given
    warnings: list[str] = []
    for form in forms:
        at = f"{where}:{form.line}:{form.column}"
        option, value = _option_and_value(form.value, at)
        if option in seen:
            warnings.append(f"{at}: {option} given again; the first, at {seen[option]}, is used")
            continue
        seen[option] = at
        if option.startswith(_BLOCK_PREFIX) and len(option) > len(_BLOCK_PREFIX):
            blocks[option.removeprefix(_BLOCK_PREFIX)] = _convert(_command, option, value, at)
        elif option in _OPTIONS:
            attr, converter = _OPTIONS[option]
            values[attr] = _convert(converter, option, value, at)
        else:
            warnings.append(f"{at}: unknown option {option} ignored")
    if ("pool" in values) != ("pool_etcd" in values):
        raise ConfigError(f"{where}: xend-pool and xend-pool-etcd go together: a pool is "
                          "named and its etcd given, or neither")
    return XendConfig(
        **values,  # type: ignore[arg-type]  # each converter makes its option's type
        block_scripts=blocks,
        source=source,
        warnings=tuple(warnings),
    )


def _option_and_value(form: sxp.Value, at: str) -> tuple[str, str]:
    if (
        isinstance(form, list)
        and len(form) == 2
        and isinstance(form[0], str)
        and isinstance(form[1], str)
    ):
        return form[0], form[1]
    raise ConfigError(f"{at}: expected (option value), got {sxp.show(form)}")


_T = TypeVar("_T")


def _convert(converter: Callable[[str], _T], option: str, value: str, at: str) -> _T:
    try:
        return converter(value)
    except ValueError as e:
        raise ConfigError(f"{at}: {option}: {e}") from None
