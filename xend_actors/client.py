"""XendClient: the Python client of xend's HTTP interface, over TCP or the Unix socket.

Where to: an explicit ``server`` (``HOST:PORT`` for HTTP, ``https://HOST:PORT`` for TLS)
or ``unix_path``, else ``$XEND`` (TCP), else ``$XEND_UNIX_PATH``, else the Unix socket of
a xend with the shipped configuration. Over the Unix socket xend knows its client by uid
(root needs nothing more); over TCP the client sends its API token (``token``, else
``$XEND_TOKEN``) as ``Authorization: Bearer``.

Over TLS xend's certificate is verified against the system's CAs, or against ``ca``
(``$XEND_CA``: a CA bundle, or xend's self-signed certificate itself); or it is pinned by
its SHA-256 ``fingerprint`` (``$XEND_FINGERPRINT``, ``AA:BB:...`` as ``xend status``
prints it). A pin is checked before any request: one handshake fetches the certificate,
and only if its fingerprint is the pinned one do requests go, over a context that trusts
exactly that certificate, so no token ever reaches an impostor. ``ssl_context`` is that
context, for whoever opens its own connection to the same xend (a console WebSocket).

It follows the original client rule (facts §4.3): 200, 201 and 202 are success and
204 is no data; an ``application/sxp`` body is parsed and an ``(xend.err msg)``
value raised as ``XendError(msg)``; any other status raises with its reason phrase
(or the body's message when it carries one). It always asks for SXP, whatever other
headers a request carries (an Accept naming text/html would get HTML).

Its HTTP is ``client_http``: HTTP/1.1 on kept-alive connections over the socket module
alone, and ``ssl`` imported only over TLS, so that a whole xm command takes tens of
milliseconds, not hundreds.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from xend_actors import sxp
from xend_actors.client_http import Connections, Reply, TransportError, Upload
from xend_actors.errors import XendError

if TYPE_CHECKING:
    import ssl
    from pathlib import Path

    from xend_actors.events.event import Event

DEFAULT_SERVER = "localhost:8000"
DEFAULT_UNIX_PATH = "/var/run/xend/xend.sock"
DEFAULT_ROOT = "/xend/"
TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass(frozen=True)
class ConsoleLog:
    """Console output from ``xend_console_log``: ``data`` starts at byte offset ``first``;
    ask for what follows with ``since=next``."""

    data: bytes
    first: int
    next: int
    status: str  # the console's: ``closed`` once its domain is gone


class XendClient:
    """One connection pool to one xend; the ``xend_*`` methods name its URLs."""

    def __init__(self, server: str | None = None, *, unix_path: str | Path | None = None,
                 root: str | None = None, timeout: float = TIMEOUT,
                 token: str | None = None, ca: str | Path | None = None,
                 fingerprint: str | None = None) -> None:
        self.root = "/" + (root or os.environ.get("XEND_ROOT", DEFAULT_ROOT)).strip("/") + "/"
        self._headers = {"Accept": sxp.MIME_TYPE}
        token = token or os.environ.get("XEND_TOKEN")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        server = server or os.environ.get("XEND") or None
        if server is None and unix_path is None:
            unix_path = os.environ.get("XEND_UNIX_PATH") or DEFAULT_UNIX_PATH
        self.unix_path = None if unix_path is None else os.fspath(unix_path)
        self._ca = ca or os.environ.get("XEND_CA") or None
        self._pin = _pin(fingerprint or os.environ.get("XEND_FINGERPRINT") or None)
        self._ssl_context: ssl.SSLContext | None = None
        self._connections: Connections | None = None
        if unix_path is not None:
            self.where = f"unix://{unix_path}"
        else:
            assert server is not None
            server = server.rstrip("/")
            self.where = server if re.match(r"https?://", server) else f"http://{server}"
        self._tls = self.where.startswith("https://")

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every connection to xend, None without TLS: verified as
        configured, the pin already checked (the first use makes one handshake for it).
        To open another connection to the same xend: ``ssl_context.wrap_socket(sock,
        server_hostname=HOST)``."""
        if self._tls and self._ssl_context is None:
            self._ssl_context = self._tls_context()
        return self._ssl_context

    @property
    def _http(self) -> Connections:
        """The connection pool, made on first use (with TLS, after the pin is checked)."""
        if self._connections is None:
            if self.unix_path is not None:
                self._connections = Connections(unix_path=self.unix_path,
                                                headers=self._headers, timeout=self._timeout)
            else:
                where = urlsplit(self.where)
                self._connections = Connections(
                    host=where.hostname or "localhost",
                    port=where.port or (443 if self._tls else 80), context=self.ssl_context,
                    headers=self._headers, timeout=self._timeout)
        return self._connections

    def close(self) -> None:
        if self._connections is not None:
            self._connections.close()

    def _tls_context(self) -> ssl.SSLContext:
        import ssl  # only over TLS: it is a sixth of a plain xm command's start-up

        if self._pin is None:
            try:
                return ssl.create_default_context(cafile=str(self._ca) if self._ca else None)
            except ssl.SSLError as error:
                raise XendError(f"XEND_CA {self._ca}: no CA certificate in it "
                                f"({error.reason or error})") from None
            except OSError as error:
                raise XendError(f"XEND_CA {self._ca}: cannot read it: {error.strerror}") from None
        pem = self._peer_certificate()
        found = _fingerprint(pem)
        if found != self._pin:
            raise XendError(f"the certificate of xend at {self.where} has fingerprint {found}, "
                            f"not the {self._pin} XEND_FINGERPRINT names")
        context = ssl.create_default_context(cadata=pem)
        context.check_hostname = False  # the pin names the certificate, not a host
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # it may have a CA above it
        return context

    def _peer_certificate(self) -> str:
        """The certificate xend presents, unverified: only its fingerprint is looked at."""
        import ssl

        parts = urlsplit(self.where)
        address = (parts.hostname or "localhost", parts.port or 443)
        try:
            return ssl.get_server_certificate(address, timeout=self._timeout)
        except OSError as error:
            raise XendError(f"Error connecting to xend at {self.where}: {error}; "
                            "is xend running?") from None

    # A console's WebSocket is a protocol of its own on a connection of its own: these
    # give it what a request would use.
    def open_socket(self, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
        """A new socket connected to xend the way this client reaches it: its Unix
        socket, or TCP to the server, under TLS as ``ssl_context`` says (verified, the
        pin checked); blocking, with ``timeout`` on each operation."""
        if self.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.unix_path)
            except BaseException:
                sock.close()
                raise
            return sock
        where = urlsplit(self.where)
        host = where.hostname or "localhost"
        context = self.ssl_context  # before connecting: a pin is checked on its own
        sock = socket.create_connection((host, where.port or (443 if self._tls else 80)),
                                        timeout=timeout)
        if context is None:
            return sock
        try:
            return context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def socket_headers(self) -> dict[str, str]:
        """The headers a request on such a socket carries (``Host``, and the credentials
        this client sends with every request)."""
        host = "xend" if self.unix_path is not None else urlsplit(self.where).netloc
        credentials = self._headers.get("Authorization")
        return {"Host": host, **({"Authorization": credentials} if credentials else {})}

    def __enter__(self) -> XendClient:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def url(self, *parts: str) -> str:
        """The path below the root, e.g. ``url("domain", "vm1")`` → ``/xend/domain/vm1``."""
        return self.root + "/".join(parts)

    # The reply's SXP (text for text/plain replies), or None for 204 (which the original
    # allowed): typed Any, as its shape is each URL's.
    def get(self, path: str, **params: object) -> Any:
        return self._send("GET", path, params=_stringify(params))

    def post(self, path: str, op: str, **params: object) -> Any:
        """POST ``op`` to ``path``; a ``Path`` parameter is uploaded as a file (multipart)."""
        # os.PathLike, not pathlib.Path: xm's commands that never upload skip its import.
        fields = {"op": op, **_stringify({k: v for k, v in params.items()
                                          if not isinstance(v, os.PathLike)})}
        files = {k: Upload(os.fspath(v), _read(v))
                 for k, v in params.items() if isinstance(v, os.PathLike)}
        # POST strips a trailing slash, GET of a directory keeps it (facts §4.4).
        return self._send("POST", path.rstrip("/"), data=fields, files=files or None)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        return _value(self._request(method, path, **kwargs))

    def _request(self, method: str, path: str, **kwargs: Any) -> Reply:
        try:
            return self._http.request(method, path, **kwargs)
        except TransportError as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: TransportError) -> XendError:
        if self._tls:
            import ssl  # imported already, by the context

            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, ssl.SSLError):
                cause = cause.__cause__ or cause.__context__
            if isinstance(cause, ssl.SSLCertVerificationError):
                return XendError(f"the certificate of xend at {self.where} cannot be verified "
                                 f"({cause.verify_message}); give its CA with XEND_CA or pin "
                                 "it with XEND_FINGERPRINT")
            if isinstance(cause, ssl.SSLError):
                return XendError(f"TLS with xend at {self.where} failed "
                                 f"({cause.reason or cause}); does it speak https?")
        return XendError(f"Error connecting to xend at {self.where}: {error}; "
                         "is xend running?")

    # The URLs and ops of facts §4.4, named 1:1 after the original's functions.

    def xend(self) -> sxp.Value:
        return self.get(self.root)

    def xend_node(self) -> sxp.Value:
        return self.get(self.url("node") + "/")

    def xend_node_get_dmesg(self) -> str:
        return str(self.get(self.url("node", "dmesg")))

    def xend_node_clear_dmesg(self) -> sxp.Value:
        return self.post(self.url("node", "dmesg"), "clear")

    def xend_node_log(self) -> str:
        return str(self.get(self.url("node", "log")))

    def xend_node_cpu_rrobin_slice_set(self, slice: int) -> sxp.Value:
        return self.post(self.url("node"), "cpu_rrobin_slice_set", slice=slice)

    def xend_node_cpu_bvt_slice_set(self, ctx_allow: int) -> sxp.Value:
        return self.post(self.url("node"), "cpu_bvt_slice_set", ctx_allow=ctx_allow)

    def xend_pool(self) -> sxp.Value:
        """The pool xend is a member of: its hosts and every domain with its host (ours)."""
        return self.get(self.url("pool") + "/")

    def xend_domains(self, detail: bool = False) -> sxp.Value:
        """The domain names; with ``detail``, every domain's info in one reply (our addition)."""
        return self.get(self.url("domain") + "/", **({"detail": 1} if detail else {}))

    def xend_domain(self, dom: str | int) -> sxp.Value:
        return self.get(self._domain(dom))

    def xend_samples(self, history: bool = False) -> sxp.Value:
        """Every domain's latest sample and rates (our addition; web/samples.py)."""
        return self.get(self.url("samples") + "/", **({"history": 1} if history else {}))

    def xend_domain_samples(self, dom: str | int, since: int = -1) -> sxp.Value:
        """A domain's rates at each sample after ``since`` (our addition)."""
        return self.get(self._domain(dom) + "/samples", since=since)

    def xend_domain_create(self, config: sxp.Value | Path) -> sxp.Value:
        """Create a paused domain; a ``Path`` is uploaded as is, like the original's ``-F``."""
        return self.post(self.url("domain"), "create", config=config)

    def xend_domain_configure(self, dom: str | int, config: sxp.Value) -> sxp.Value:
        return self.post(self._domain(dom), "configure", config=config)

    def xend_domain_save(self, dom: str | int, filename: str) -> sxp.Value:
        """Save the domain to ``filename`` on xend's host; the domain is then destroyed."""
        return self.post(self._domain(dom), "save", file=filename)

    def xend_domain_migrate(self, dom: str | int, dst: str, live: int = 0,
                            resource: int = 0) -> sxp.Value:
        """Migrate ``dom`` to the xend whose relocation port is ``dst`` (``host[:port]``);
        ``resource`` limits the stream to that many Mbit/s. The new domain's URL."""
        return self.post(self._domain(dom), "migrate", destination=dst, live=live,
                         resource=resource)

    def xend_pool_create(self, config: sxp.Value | Path, unpause: bool = False) -> sxp.Value:
        """Create a domain on the pool member with the most free memory that fits (the
        xend asked, or another it forwards to), unpaused if ``unpause``; its info, with
        ``(host NAME)``: the member it went to."""
        return self.post(self.url("pool"), "create", config=config, unpause=int(unpause))

    def xend_pool_migrate(self, dom: str | int, live: int = 0, resource: int = 0) -> sxp.Value:
        """Migrate ``dom`` (on any member of the xend's pool) to the other member with the
        most free memory that fits; ``(migrate (host NAME) (location URL))``."""
        return self.post(self.url("pool"), "migrate", dom=dom, live=live, resource=resource)

    def xend_domain_restore(self, filename: str) -> sxp.Value:
        """Restore the domain saved in ``filename`` on xend's host; its info."""
        return self.post(self.url("domain"), "restore", file=filename)

    def xend_domain_unpause(self, dom: str | int) -> sxp.Value:
        return self.post(self._domain(dom), "unpause")

    def xend_domain_pause(self, dom: str | int) -> sxp.Value:
        return self.post(self._domain(dom), "pause")

    def xend_domain_shutdown(self, dom: str | int, reason: str,
                             key: str | int = 0) -> sxp.Value:
        """Ask ``dom`` to shut down; ``key`` (a character, or its code as the original
        client sent it) goes with reason ``sysrq``."""
        extra = {"key": key} if reason == "sysrq" else {}
        return self.post(self._domain(dom), "shutdown", reason=reason, **extra)

    def xend_domain_destroy(self, dom: str | int, reason: str) -> sxp.Value:
        return self.post(self._domain(dom), "destroy", reason=reason)

    def xend_domain_pincpu(self, dom: str | int, cpu: int) -> sxp.Value:
        return self.post(self._domain(dom), "pincpu", cpu=cpu)

    def xend_domain_cpu_bvt_set(self, dom: str | int, mcuadv: int, warpback: int,
                                warpvalue: int, warpl: int, warpu: int) -> sxp.Value:
        return self.post(self._domain(dom), "cpu_bvt_set", mcuadv=mcuadv, warpback=warpback,
                         warpvalue=warpvalue, warpl=warpl, warpu=warpu)

    def xend_domain_cpu_fbvt_set(self, dom: str | int, mcuadv: int, warp: int, warpl: int,
                                 warpu: int) -> sxp.Value:
        return self.post(self._domain(dom), "cpu_fbvt_set", mcuadv=mcuadv, warp=warp,
                         warpl=warpl, warpu=warpu)

    def xend_domain_cpu_atropos_set(self, dom: str | int, period: int, slice: int,
                                    latency: int, xtratime: int) -> sxp.Value:
        return self.post(self._domain(dom), "cpu_atropos_set", period=period, slice=slice,
                         latency=latency, xtratime=xtratime)

    def xend_domain_maxmem_set(self, dom: str | int, memory: int) -> sxp.Value:
        return self.post(self._domain(dom), "maxmem_set", memory=memory)

    def xend_domain_mem_target_set(self, dom: str | int, target: int) -> sxp.Value:
        return self.post(self._domain(dom), "mem_target_set", target=target)

    def xend_domain_vbds(self, dom: str | int) -> sxp.Value:
        return self.get(self._domain(dom), op="vbds")

    def xend_domain_vbd(self, dom: str | int, vbd: int | str) -> sxp.Value:
        return self.get(self._domain(dom), op="vbd", vbd=vbd)

    def xend_domain_vifs(self, dom: str | int) -> sxp.Value:
        return self.get(self._domain(dom), op="vifs")

    def xend_domain_vif(self, dom: str | int, vif: int | str) -> sxp.Value:
        return self.get(self._domain(dom), op="vif", vif=vif)

    def xend_domain_device_create(self, dom: str | int, config: sxp.Value) -> sxp.Value:
        return self.post(self._domain(dom), "device_create", config=config)

    def xend_domain_device_configure(self, dom: str | int, config: sxp.Value,
                                     idx: int | str) -> sxp.Value:
        return self.post(self._domain(dom), "device_configure", config=config,
                         idx=idx)

    def xend_domain_device_destroy(self, dom: str | int, type: str,
                                   idx: int | str) -> sxp.Value:
        return self.post(self._domain(dom), "device_destroy", type=type, idx=idx)

    def xend_event_inject(self, sxpr: sxp.Value) -> sxp.Value:
        return self.post(self.url("event"), "inject", event=sxpr)

    def xend_events(self, since: int | str, timeout: int | str = 30) -> Any:
        """The events numbered after ``since``, waiting up to ``timeout`` s for one (ours).

        A list of ``(event (seq N) (time T) (name NAME) (value V))``, ``()`` if none came;
        ``events.Event.from_record`` reads one.
        """
        return self._send("GET", self.url("event") + "/",
                          params=_stringify({"since": since, "timeout": timeout}),
                          timeout=float(timeout) + TIMEOUT)

    def xend_event_stream(self, timeout: int = 600,
                          on_open: Callable[[], None] = lambda: None) -> Iterator[Event]:
        """The events from the next one on, as they come (ours: the Server-Sent Events
        stream); ``on_open`` is called once xend has accepted the stream. Ends after
        ``timeout`` seconds."""
        from xend_actors.events.event import Event  # only here: xm's commands skip it

        headers = {"Accept": "text/event-stream"}
        try:
            with self._http.stream("GET", self.url("event") + "/", headers=headers,
                                   params={"timeout": str(timeout)},
                                   timeout=timeout + TIMEOUT) as reply:
                if reply.status_code != 200:
                    raise XendError(f"the event stream answered {reply.status_code}")
                on_open()
                seq, name = 0, ""
                value: sxp.Value = ""
                for line in reply.iter_lines():
                    field, _, data = line.partition(": ")
                    if field == "id":
                        seq = int(data)
                    elif field == "event":
                        name = data
                    elif field == "data":
                        value = sxp.parse(data)
                    elif not line and name:
                        yield Event(seq, name, value, time.time())
                        name = ""
        except TransportError as error:
            raise self._unreachable(error) from None

    def xend_node_notify(self, url: str) -> sxp.Value:
        """Have xend POST every event to ``url`` (ours; the original only listed it)."""
        return self.post(self.url("node"), "notify", url=url)

    def xend_node_unnotify(self, url: str) -> sxp.Value:
        return self.post(self.url("node"), "unnotify", url=url)

    def xend_node_notify_urls(self) -> sxp.Value:
        return self.get(self.url("node", "notify"))

    def xend_consoles(self, detail: bool = False) -> sxp.Value:
        """The ports of the open consoles; with ``detail``, their info (our addition)."""
        return self.get(self.url("console") + "/", **({"detail": 1} if detail else {}))

    def xend_console(self, id: int | str) -> sxp.Value:
        return self.get(self.url("console", str(id)))

    def xend_console_disconnect(self, id: int | str) -> sxp.Value:
        return self.post(self.url("console", str(id)), "disconnect")

    def xend_console_log(self, id: int | str, since: int | str = 0,
                         wait: int | str = 0) -> ConsoleLog:
        """A console's output after byte offset ``since``, waiting up to ``wait`` s for
        some if there is none yet (ours: the scrollback, also of a closed console)."""
        reply = self._request("GET", self.url("console", str(id), "log"),
                              params=_stringify({"since": since, "wait": wait}),
                              timeout=float(wait) + TIMEOUT)
        if reply.status_code != 200:
            _value(reply)  # raises, by the client rule
        headers = reply.headers
        return ConsoleLog(reply.content, int(headers["x-console-first"]),
                          int(headers["x-console-next"]), headers["x-console-status"])

    def xend_vnets(self, detail: bool = False) -> sxp.Value:
        """The vnet ids; with ``detail``, every vnet's config (our addition)."""
        return self.get(self.url("vnet") + "/", **({"detail": 1} if detail else {}))

    def xend_vnet(self, id: int | str) -> sxp.Value:
        return self.get(self._vnet(id))

    def xend_vnet_create(self, config: sxp.Value | Path) -> sxp.Value:
        """Create a vnet from ``(vnet ...)``; a ``Path`` is uploaded as is."""
        return self.post(self.url("vnet"), "create", config=config)

    def xend_vnet_delete(self, id: int | str) -> sxp.Value:
        return self.post(self._vnet(id), "delete")

    # API tokens (ours): admins only.

    def xend_tokens(self) -> sxp.Value:
        """Every token's ``(token (name N) (role R) (created T))``; never a secret."""
        return self.get(self.url("token") + "/")

    def xend_token_create(self, name: str, role: str = "admin") -> sxp.Value:
        """Make a token; ``(token (name N) (role R) (secret S))``: S is shown only now."""
        return self.post(self.url("token"), "create", name=name, role=role)

    def xend_token_delete(self, name: str) -> sxp.Value:
        return self.post(self.url("token", quote(name, safe="")), "delete")

    def _vnet(self, id: int | str) -> str:
        return self.url("vnet", quote(str(id), safe=""))

    def _domain(self, dom: str | int) -> str:
        # A name is one path segment whatever it holds ("?", "#", "%").
        return self.url("domain", quote(str(dom), safe=""))


def _pin(fingerprint: str | None) -> str | None:
    """A SHA-256 fingerprint as ``AA:BB:...``, from any case, with or without colons."""
    if fingerprint is None:
        return None
    digits = re.sub(r"[:\s]", "", fingerprint)
    if not _FINGERPRINT.fullmatch(digits):
        raise XendError(f"XEND_FINGERPRINT {fingerprint!r} is not a SHA-256 fingerprint "
                        "(64 hex digits, e.g. AA:BB:..., as xend status prints it)")
    return ":".join(re.findall("..", digits.upper()))


def _fingerprint(pem: str) -> str:
    import hashlib  # only with a pin: every other xm command would pay its import
    import ssl

    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()
    return ":".join(f"{byte:02X}" for byte in digest)


def _value(reply: Reply) -> sxp.Value | str | None:
    """The reply's value by the client rule; an error reply raises ``XendError``."""
    if reply.status_code == 204:
        return None
    value = _body(reply)
    if sxp.name(value) == "xend.err" and isinstance(value, list):
        raise XendError(str(sxp.child0(value, "")), status=reply.status_code)
    if reply.status_code not in (200, 201, 202):
        raise XendError(reply.reason_phrase or f"HTTP {reply.status_code}",
                        status=reply.status_code)
    return value


def _body(reply: Reply) -> sxp.Value | str:
    if reply.headers.get("content-type", "").split(";")[0].strip() != sxp.MIME_TYPE:
        return reply.text
    try:
        # Read whole already, so its size bounds nothing more (the depth limit stays):
        # ``xm list`` at 10,000 domains is 4 MiB, past the bound on what xend is sent.
        return sxp.parse(reply.content, max_size=max(len(reply.content), sxp.MAX_SIZE))
    except sxp.ParseError as error:
        raise XendError(f"xend sent a reply that does not parse: {error}") from None


def _read(path: os.PathLike[str]) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _stringify(params: dict[str, object]) -> dict[str, str]:
    return {name: value if isinstance(value, str) else sxp.show(value)
            for name, value in params.items()}
