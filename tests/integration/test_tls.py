"""TLS on xend's TCP listener, as xm and XendClient users meet it.

The module's shared xend says ``(xend-tls yes)`` and so serves a self-signed certificate
it made under its dbroot; ``xend status`` prints the fingerprint users pin. Clients
verify the certificate against it (``XEND_CA``) or pin it (``XEND_FINGERPRINT``), and a
pin is checked before a request goes: an impostor with another certificate gets no byte
of a request, so never the token. A certificate from the config works the same, a bad
one stops the start with a clear error, plain HTTP is refused on an address that is not
loopback unless the config says ``(xend-tls no)``, and a client that never finishes its
handshake neither stalls the others nor holds its connection for long. A browser over
TLS gets Secure cookies, and its forms count as xend's own.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.home import XendHome
from tests.support.netns import netns_usable
from tests.support.processes import wait_for
from tests.support.terminal import WsTerminal
from tests.support.xend import Xend, run_xm, sim_vm
from xend_actors import sxp
from xend_actors.access.tls import Certificate, fingerprint, make_self_signed
from xend_actors.client import XendClient
from xend_actors.errors import XendError
from xend_actors.web.http_connection import HANDSHAKE_TIMEOUT

pytestmark = pytest.mark.integration

LIST_HEADER = "Name              Id  Mem(MB)  CPU  State  Time(s)  Console"


@pytest.fixture(scope="module")
def shared_xend_config() -> str:
    return "(xend-tls yes)\n"


def https(home: XendHome) -> str:
    return f"https://127.0.0.1:{home.http_port}"


def cert_of(home: XendHome) -> Path:
    return home.dbroot / "tls" / "cert.pem"


def status_fingerprint(home: XendHome) -> str:
    """The fingerprint ``xend status`` prints."""
    status = home.xend("status")
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if "fingerprint" in line]
    return line.split()[-1]


def xm_tls(home: XendHome, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """xm over TLS to ``home``'s xend with an admin token, and ``env`` besides."""
    return run_xm(https(home), *args, env={"XEND_TOKEN": home.admin_token(), **env})


def is_one_error_line(done: subprocess.CompletedProcess[str]) -> bool:
    return (done.returncode == 1 and done.stderr.startswith("Error: ")
            and done.stderr.count("\n") == 1)


# --- the self-signed certificate ------------------------------------------------------------


def test_status_prints_the_fingerprint_of_the_self_signed_certificate(
        shared_home: XendHome) -> None:
    pem = cert_of(shared_home).read_bytes()
    printed = status_fingerprint(shared_home)
    assert printed == fingerprint(pem)
    assert len(printed) == 95 and printed.count(":") == 31
    # What a client sees on the wire is that very certificate.
    served = ssl.get_server_certificate(("127.0.0.1", shared_home.http_port))
    assert fingerprint(served.encode()) == printed
    assert (cert_of(shared_home).parent / "key.pem").stat().st_mode & 0o777 == 0o600
    names = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert {"localhost", socket.gethostname()} <= set(names.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= set(
        names.get_values_for_type(x509.IPAddress))


def test_xm_with_the_pinned_fingerprint_lists_and_creates(shared_home: XendHome,
                                                          tmp_path: Path) -> None:
    pin = {"XEND_FINGERPRINT": status_fingerprint(shared_home)}
    config = tmp_path / "pinned.sxp"
    config.write_text(sxp.show(sim_vm("pinned")))
    made = xm_tls(shared_home, "create", "-F", str(config), **pin)
    assert made.returncode == 0, made.stderr
    listed = xm_tls(shared_home, "list", **pin)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == LIST_HEADER
    assert "pinned" in listed.stdout and "Domain-0" in listed.stdout


def test_xm_verifying_against_the_certificate_itself_lists_and_creates(
        shared_home: XendHome, tmp_path: Path) -> None:
    ca = {"XEND_CA": str(cert_of(shared_home))}
    config = tmp_path / "verified.sxp"
    config.write_text(sxp.show(sim_vm("verified")))
    made = xm_tls(shared_home, "create", "-F", str(config), **ca)
    assert made.returncode == 0, made.stderr
    listed = xm_tls(shared_home, "list", **ca)
    assert listed.returncode == 0, listed.stderr
    assert "verified" in listed.stdout
    # The options say the same as the environment.
    by_option = run_xm(https(shared_home), "--ca", str(cert_of(shared_home)), "list",
                       env={"XEND_TOKEN": shared_home.admin_token()})
    assert by_option.returncode == 0 and "verified" in by_option.stdout, by_option.stderr


def test_a_certificate_nobody_vouches_for_or_a_wrong_pin_is_one_error_line(
        shared_home: XendHome) -> None:
    unverified = xm_tls(shared_home, "list")
    assert is_one_error_line(unverified), unverified.stderr
    assert "cannot be verified (self-signed certificate)" in unverified.stderr
    assert "XEND_CA" in unverified.stderr and "XEND_FINGERPRINT" in unverified.stderr

    wrong = "AB:" * 31 + "AB"
    pinned_wrong = xm_tls(shared_home, "list", XEND_FINGERPRINT=wrong)
    assert is_one_error_line(pinned_wrong), pinned_wrong.stderr
    assert (f"has fingerprint {status_fingerprint(shared_home)}, not the {wrong} "
            "XEND_FINGERPRINT names") in pinned_wrong.stderr

    garbled = xm_tls(shared_home, "list", XEND_FINGERPRINT="AB:CD")
    assert is_one_error_line(garbled) and "not a SHA-256 fingerprint" in garbled.stderr


def test_plain_http_to_the_tls_port_is_told_to_use_https(shared_home: XendHome) -> None:
    done = run_xm(f"127.0.0.1:{shared_home.http_port}", "list",
                  env={"XEND_TOKEN": shared_home.admin_token()})
    assert is_one_error_line(done), done.stderr
    assert "xend speaks HTTPS on this port: use an https:// URL" in done.stderr


class Impostor:
    """A TLS server with a certificate of its own at xend's place: it keeps every byte a
    client sends it after the handshake."""

    def __init__(self, folder: Path) -> None:
        certificate = Certificate(folder / "impostor.pem", folder / "impostor.key")
        make_self_signed(certificate, "127.0.0.1")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate.cert, certificate.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            with contextlib.suppress(OSError), \
                    self.context.wrap_socket(connection, server_side=True) as secure:
                self.handshakes += 1
                secure.settimeout(10)
                data = b""
                while chunk := secure.recv(65536):
                    data += chunk
                self.received.append(data)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Impostor]:
    made = Impostor(tmp_path)
    yield made
    made.close()


def test_a_wrong_certificate_gets_no_request_and_so_never_the_token(
        shared_home: XendHome, impostor: Impostor) -> None:
    token = shared_home.admin_token()
    pinned = run_xm(f"https://127.0.0.1:{impostor.port}", "list", env={
        "XEND_TOKEN": token, "XEND_FINGERPRINT": status_fingerprint(shared_home)})
    assert is_one_error_line(pinned), pinned.stderr
    assert "XEND_FINGERPRINT names" in pinned.stderr
    wait_for(lambda: len(impostor.received) == 1, what="the impostor's connection to end")
    assert impostor.handshakes == 1  # the pin's one look at the certificate
    assert impostor.received == [b""]  # and not one byte after it

    verified = run_xm(f"https://127.0.0.1:{impostor.port}", "list", env={
        "XEND_TOKEN": token, "XEND_CA": str(cert_of(shared_home))})
    assert is_one_error_line(verified), verified.stderr
    assert "cannot be verified" in verified.stderr
    assert impostor.handshakes == 1  # the client broke its handshake off
    assert token.encode() not in b"".join(impostor.received)


def test_an_admin_token_drives_create_console_save_restore_destroy_over_verified_tls(
        shared_home: XendHome, tmp_path: Path) -> None:
    image = str(tmp_path / "tls1.save")
    with XendClient(https(shared_home), token=shared_home.admin_token(),
                    ca=cert_of(shared_home)) as client:
        assert client.ssl_context is not None
        assert client.ssl_context.verify_mode is ssl.CERT_REQUIRED
        assert client.ssl_context.check_hostname  # 127.0.0.1 is among its names
        info = client.xend_domain_create(sim_vm("tls1"))
        client.xend_domain_unpause("tls1")
        port = int(sxp.child_value(sxp.child(info, "console"), "console_port"))
        # The console, through the WebSocket on the same verified TLS connection.
        headers = client.socket_headers()
        host = headers.pop("Host")
        term = WsTerminal(client.open_socket(), port, {**headers, "Origin": https(shared_home)},
                          host=host)
        try:
            term.read_until(b"# ", timeout=30)
            term.type("echo over-tls")
            assert b"over-tls\r\n" in term.read_until(b"over-tls\r\n")
        finally:
            term.close()
        assert client.xend_domain_save("tls1", image) == "0"
        assert "tls1" not in client.xend_domains()
        restored = client.xend_domain_restore(image)
        assert sxp.child_value(restored, "name") == "tls1"
        assert "tls1" in client.xend_domains()
        client.xend_domain_destroy("tls1", "halt")
        wait_for(lambda: "tls1" not in client.xend_domains(), what="tls1 to go")
    audit = shared_home.logfile.read_text()
    for op in ("create", "unpause", "save", "restore", "destroy"):
        assert f"token tests ran {op}" in audit, op


def test_the_pin_also_gives_the_context_a_raw_connection_uses(shared_home: XendHome) -> None:
    client = XendClient(https(shared_home), token=shared_home.admin_token(),
                        fingerprint=status_fingerprint(shared_home).lower().replace(":", ""))
    with client:
        context = client.ssl_context
        assert context is not None
        with socket.create_connection(("127.0.0.1", shared_home.http_port)) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
            secure.sendall(b"GET /xend/ HTTP/1.0\r\nAccept: application/sxp\r\n"
                           b"Authorization: Bearer " + shared_home.admin_token().encode()
                           + b"\r\n\r\n")
            reply = b""
            while chunk := secure.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert "domain" in sxp.parse(body)


def test_the_event_stream_flows_over_tls(shared_home: XendHome) -> None:
    opened = threading.Event()
    got: list[str] = []

    def listen() -> None:
        with XendClient(https(shared_home), token=shared_home.admin_token(),
                        ca=cert_of(shared_home)) as client:
            for event in client.xend_event_stream(timeout=60, on_open=opened.set):
                if event.name == "tls.streamed":
                    got.append(sxp.show(event.value))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(30), "the event stream did not open"
    with XendClient(https(shared_home), token=shared_home.admin_token(),
                    ca=cert_of(shared_home)) as client:
        client.xend_event_inject(["tls.streamed", "over-tls"])
    listener.join(30)
    assert got == ["(tls.streamed over-tls)"]


def test_a_request_slower_than_the_handshake_deadline_is_still_served(
        shared_home: XendHome) -> None:
    """The deadline is the handshake's only: an upload that pauses longer (a slow
    link) is not cut off once the handshake is done."""
    context = ssl.create_default_context(cafile=cert_of(shared_home))
    body = b"op=inject&event=%28tls.slow+upload%29"
    head = (f"POST /xend/event HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/sxp\r\n"
            f"Authorization: Bearer {shared_home.admin_token()}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", shared_home.http_port)) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
        secure.sendall(head + body[:10])
        time.sleep(HANDSHAKE_TIMEOUT + 1)  # what is tested: a pause past the deadline
        secure.sendall(body[10:])
        secure.settimeout(30)
        reply = b""
        while chunk := secure.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]


# --- a handshake that never finishes -----------------------------------------------------------


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """How many seconds until the server closed ``sock`` (its bytes read and dropped);
    None if it was still open after ``seconds``."""
    began = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - began


def test_a_handshake_that_never_finishes_stalls_nobody_and_is_dropped(
        shared_home: XendHome) -> None:
    address = ("127.0.0.1", shared_home.http_port)
    silent = socket.create_connection(address)  # connects, then says nothing
    started = socket.create_connection(address)  # starts a handshake, never goes on
    started.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    garbage = socket.create_connection(address)
    garbage.sendall(b"\x16" + secrets.token_bytes(600))
    began = time.monotonic()
    with XendClient(https(shared_home), token=shared_home.admin_token(),
                    ca=cert_of(shared_home)) as client:
        assert "Domain-0" in client.xend_domains()
    served_in = time.monotonic() - began
    silent.setblocking(False)
    with pytest.raises(BlockingIOError):
        silent.recv(1)  # still connected: it was served while these waited
    assert served_in < HANDSHAKE_TIMEOUT, served_in

    assert closed_within(garbage, 5) is not None  # at once: it is no TLS
    for stalled in (silent, started):
        seconds = closed_within(stalled, HANDSHAKE_TIMEOUT + 5)
        assert seconds is not None, "a stalled handshake kept its connection"
        assert seconds <= HANDSHAKE_TIMEOUT + 1, seconds
        stalled.close()
    garbage.close()
    with XendClient(https(shared_home), token=shared_home.admin_token(),
                    ca=cert_of(shared_home)) as client:
        assert "Domain-0" in client.xend_domains()


# --- xends of their own ---------------------------------------------------------------------


def test_the_self_signed_certificate_is_kept_across_restarts(
        fresh_xend: Callable[..., Xend]) -> None:
    home = fresh_xend("(xend-tls yes)\n").home
    first = status_fingerprint(home)
    home.stop()
    home.start()
    assert status_fingerprint(home) == first
    listed = xm_tls(home, "list", XEND_FINGERPRINT=first)
    assert listed.returncode == 0, listed.stderr


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for 127.0.0.1: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xend")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


def test_a_configured_certificate_is_served_and_verified_against_its_ca(
        fresh_xend: Callable[..., Xend], tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    home = fresh_xend(f"(xend-tls-cert {cert})\n(xend-tls-key {key})\n").home  # auto
    assert not (home.dbroot / "tls").exists()
    assert status_fingerprint(home) == fingerprint(cert.read_bytes())
    by_ca = xm_tls(home, "list", XEND_CA=str(ca))
    assert by_ca.returncode == 0 and "Domain-0" in by_ca.stdout, by_ca.stderr
    # A pin trusts the server's own certificate, whatever CA is above it.
    pinned = xm_tls(home, "list", XEND_FINGERPRINT=fingerprint(cert.read_bytes()))
    assert pinned.returncode == 0 and "Domain-0" in pinned.stdout, pinned.stderr
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    refused = xm_tls(home, "list", XEND_CA=str(other_ca))
    assert is_one_error_line(refused) and "cannot be verified" in refused.stderr


@pytest.mark.parametrize(("lines", "said"), [
    ("(xend-tls-cert {none}/cert.pem)\n(xend-tls-key {key})\n",
     "(xend-tls-cert {none}/cert.pem): cannot read it: No such file or directory"),
    ("(xend-tls-cert {cert})\n(xend-tls-key {none}/key.pem)\n",
     "(xend-tls-key {none}/key.pem): cannot read it: No such file or directory"),
    ("(xend-tls-cert {key})\n(xend-tls-key {cert})\n", "not a PEM certificate and its key"),
    ("(xend-tls-cert {cert})\n", "go together"),
])
def test_a_certificate_that_cannot_be_used_stops_the_start(
        xend_home: Callable[..., XendHome], tmp_path: Path, lines: str, said: str) -> None:
    _, cert, key = make_ca_and_server_cert(tmp_path)
    names = {"none": tmp_path / "none", "cert": cert, "key": key}
    home = xend_home(lines.format(**names))
    started = home.xend("start")
    assert started.returncode == 1
    assert said.format(**names) in started.stderr, started.stderr
    assert home.pid() is None


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, with only its loopback up."""
    why = netns_usable()
    if why:
        pytest.skip(why)
    name = f"xt-tls-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_plain_http_on_every_address_refuses_to_start_unless_the_config_says_so(
        xend_home: Callable[..., XendHome], netns: str) -> None:
    home = xend_home("(xend-address '')\n")
    home.netns = netns  # '' is every address: of this namespace only
    refused = home.xend("start")
    assert refused.returncode == 1
    assert "not loopback, without TLS" in refused.stderr, refused.stderr
    assert "(xend-tls no)" in refused.stderr
    assert home.pid() is None

    plain = xend_home("(xend-address '')\n(xend-tls no)\n")
    plain.netns = netns
    plain.start()
    assert plain.alive()
    assert "(xend-tls no): plain HTTP on every address" in plain.logfile.read_text()

    secure = xend_home("(xend-address '')\n(xend-tls yes)\n")
    secure.netns = netns
    secure.start()
    assert secure.alive()
    served = subprocess.run(
        ["ip", "netns", "exec", netns, "python3", "-c",
         "import ssl, sys; print(ssl.get_server_certificate(('127.0.0.1', int(sys.argv[1]))))",
         str(secure.http_port)], capture_output=True, text=True, timeout=30)
    assert fingerprint(served.stdout.encode()) == status_fingerprint(secure)


def test_https_to_nothing_or_to_plain_http_is_one_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]

        def answer_plainly() -> None:
            connection, _ = plain.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_plainly, daemon=True).start()
        with pytest.raises(XendError, match="does it speak https"), \
                XendClient(f"https://127.0.0.1:{port}", ca=None) as client:
            client.xend_domains()
    with pytest.raises(XendError, match="is xend running"), \
            XendClient(f"https://127.0.0.1:{port}", fingerprint="AB" * 32) as client:
        client.xend_domains()


def test_a_browser_over_tls_gets_secure_cookies_and_its_forms_pass_as_its_own(
        shared_home: XendHome) -> None:
    """xend knows the request came over https: cookies are Secure, and a form posted
    with the https origin is xend's own (a login is tried, not refused as cross-site)."""
    origin = https(shared_home)
    context = ssl.create_default_context(cafile=cert_of(shared_home))
    browser_headers = {"User-Agent": "Mozilla/5.0", "Accept": "text/html"}
    with httpx.Client(base_url=origin, verify=context, headers=browser_headers) as browser:
        page = browser.get("/xend/login")
        assert page.status_code == 200
        cookies = page.headers.get_list("set-cookie")
        assert cookies and all("Secure" in cookie for cookie in cookies), cookies
        field, token = re.search(r'name="([^"]+)" value="([^"]+)">\s*<input type="hidden" '
                                 r'name="op" value="login"', page.text).groups()  # type: ignore[union-attr]
        tried = browser.post("/xend/login", headers={"Origin": origin}, data={
            field: token, "op": "login", "form": "login", "username": "no-such-user-xt",
            "password": "wrong"})
    assert tried.status_code == 401, tried.text
    assert "cross-site" not in tried.text and "own pages" not in tried.text
