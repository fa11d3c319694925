"""An HTTP fuzzer over every route of one real xend (issue 15, "Prove it").

Hypothesis makes the requests: every route ``web/routes.py`` lists (read from its
table, so a new route is fuzzed without a word here), every method, each resource's
ops and their declared parameters (read from the ``@op`` declarations), values of
each kind up to and past their limits, bodies as a query, a form, multipart (some
truncated) or junk, up to and past the body limit; and raw requests over the socket
with bad encodings, conflicting or huge headers, truncated bodies. They go to one
real xend over its Unix socket as root (an admin: the ops really run) and some over
TCP with and without a token; a few slow senders come last.

The properties: no reply is a 500 and the xend log gets no ``Traceback`` (read after
each example), no request hangs (each has a deadline), xend stays up (the same
process) and its RSS stays bounded. Findings are collected over the whole run, one
per kind (method, route, op, status, the traceback's last line) with the shortest
request that showed it, and the test fails once at the end listing them all, so one
run says everything that is wrong rather than the first thing.

What the fuzzer keeps away from: paths and URLs that would leave the test's own
folder or loopback (save and restore files are in a folder of the test's; migrate
and notify go to closed loopback ports), device files as restore input (issue 15
item 1: ``/dev/zero`` took 10 GB; a test of that item covers it), the ``tests`` token
the harness uses, and event streams without an end.

    XEND_FUZZ=long pytest tests/integration/test_fuzz.py   # 20x the examples
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import itertools
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.home import XendHome, new_home
from tests.support.processes import wait_for
from tests.support.sharing import Reaper
from tests.support.xend import Xend
from xend_actors import sxp
from xend_actors.web import routes
from xend_actors.web.app import MAX_BODY_BYTES
from xend_actors.web.forms import Kind, Param
from xend_actors.web.resource import Resource

LONG = os.environ.get("XEND_FUZZ") == "long"
SCALE = 20 if LONG else 1
REQUEST_TIMEOUT = 20.0  # a reply later than this is a hang
RSS_GROWTH_LIMIT = 200 << 20  # bytes xend may grow by over a run
KERNEL = "/boot/vmlinuz-sim"
HARNESS_TOKEN = "tests"  # XendHome.admin_token's: the TCP runs need it


# --- the routes and their ops, read from xend itself ---------------------------------------------


@dataclass(frozen=True)
class Route:
    template: str  # as in routes.py: /xend/domain/<path:dom>/
    resource: type[Resource]

    @property
    def ops(self) -> dict[str, tuple[Param, ...]]:
        return {name: op.params for name, op in self.resource.ops.items()}


def read_routes() -> list[Route]:
    """Every (URL, resource) pair of ``make_app``'s table, by reading its source."""
    tree = ast.parse(inspect.getsource(routes))
    found: list[Route] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Tuple) and len(node.elts) == 2
                and isinstance(node.elts[0], ast.Constant) and isinstance(node.elts[0].value, str)
                and isinstance(node.elts[1], ast.Call) and isinstance(node.elts[1].func, ast.Name)):
            template = node.elts[0].value
            cls = vars(routes).get(node.elts[1].func.id)
            if template.startswith("/xend/") and isinstance(cls, type):
                found.append(Route(template, cls))
    return found


ROUTES = read_routes()
# The routes with the most ops (the domains') come up more often than a fair draw would.
WEIGHTED = [route for route in ROUTES for _ in range(1 + len(route.ops) // 4)]
URL_PART = re.compile(r"<(?:(\w+):)?(\w+)>")


def test_the_fuzzer_sees_every_route() -> None:
    templates = {route.template for route in ROUTES}
    assert {"/xend/", "/xend/domain/<path:dom>/", "/xend/console/<int:port>/log",
            "/xend/token/<name>/", "/xend/vnet/<vnet>/"} <= templates
    assert "migrate" in next(r for r in ROUTES if r.template.startswith("/xend/domain/<")).ops


# --- the findings --------------------------------------------------------------------------------


@dataclass
class Findings:
    """What went wrong, one entry per kind, with the shortest request that showed it."""

    seen: dict[str, str] = field(default_factory=dict)
    examples: int = 0
    replies: Counter[str] = field(default_factory=Counter)  # kind and status: what ran

    def add(self, kind: str, request: str) -> None:
        known = self.seen.get(kind)
        if known is None or len(request) < len(known):
            self.seen[kind] = request

    def report(self) -> str:
        return "\n".join(f"- {kind}\n    {request}" for kind, request in sorted(self.seen.items()))

    def coverage(self) -> str:
        """How many replies of each status each kind of request got."""
        return "\n".join(f"{count:5} {what}" for what, count in sorted(self.replies.items()))


class XendLog:
    """The new text of xend's log since the last look (rotation starts it again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.at = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def new(self) -> str:
        size = self._size()
        if size < self.at:  # rotated
            self.at = 0
        with self.path.open("rb") as log:
            log.seek(self.at)
            text = log.read(size - self.at)
        self.at = size
        return text.decode(errors="replace")


def tracebacks(text: str) -> list[tuple[str, str]]:
    """Each traceback in ``text``: who logged it at what level, the exception's type and
    its last frame; and its last line."""
    found = []
    blocks = text.split("Traceback (most recent call last):")
    for before, block in itertools.pairwise(blocks):
        logged = re.findall(r"\] (\w+) \(([\w.]+:\d+)\)", before)
        level, where_logged = logged[-1] if logged else ("?", "?")
        lines = [line for line in block.splitlines() if line.strip()]
        frames = [line.strip() for line in lines if line.strip().startswith("File ")]
        last = next((line.strip() for line in lines if not line.startswith(" ")), "?")
        where = re.sub(r'File ".*/(xend_actors/[^"]+)"', r"\1", frames[-1]) if frames else "?"
        kind = last.split(":", 1)[0]  # the exception's type: its message carries the input
        found.append((f"{level} ({where_logged}) {kind} at {where}", last[:200]))
    return found


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- the xend under fuzz -------------------------------------------------------------------------


class Target:
    """One xend, a domain ``fz`` kept alive on it to aim at, and what was found."""

    def __init__(self, xend: Xend, files: Path) -> None:
        self.xend = xend
        self.home: XendHome = xend.home
        self.files = files
        self.findings = Findings()
        self.log = XendLog(self.home.logfile)
        pid = self.home.pid()
        assert pid is not None
        self.pid: int = pid
        self.rss_before = rss(self.pid)
        (files / "empty").write_bytes(b"")
        (files / "junk").write_bytes(os.urandom(4096))
        (files / "folder").mkdir()
        self.port = 0
        self.ensure_domain()

    def ensure_domain(self) -> None:
        """``fz`` alive and printing on its console; at most a few others left by the fuzz."""
        names = self.xend.names()
        for name in names:
            if name not in ("Domain-0", "fz") and len(names) > 6:
                self.xend.post(f"/xend/domain/{quote(name, safe='')}", op="destroy",
                               reason="halt")
        if "fz" not in names:
            info = self.xend.create(domain_config("fz"), unpause=True)
            self.port = int(sxp.child_value(sxp.child(info, "console"), "console_port"))
            wait_for(lambda: self.xend.get(f"/xend/console/{self.port}/log").content != b"",
                     what="fz's console output")

    def check(self, kind: str, request: str, status: int | None,
              problem: str | None = None) -> None:
        """After one request of ``kind`` (method, route, op): its status (None: no reply),
        and what the log says."""
        self.findings.examples += 1
        self.findings.replies[f"{kind} -> {status}"] += 1
        if problem is not None:
            self.findings.add(f"{problem}: {kind}", request)
        if status is not None and status >= 500 and status not in (501, 503, 504):
            self.findings.add(f"{status} to {kind}", request)
        for trace, message in tracebacks(self.log.new()):
            self.findings.add(f"traceback: {trace}", f"after {kind}: {request}\n    {message}")
        if self.home.pid() != self.pid:
            self.findings.add("xend is gone", request)
            raise AssertionError(f"xend died after: {request}\n{self.home.log_tail()}")

    def problems(self) -> list[str]:
        """What the requests so far broke (none: xend served them all): xend gone or
        restarted, its RSS grown past the limit, the failures found."""
        if not self.home.alive() or self.home.pid() != self.pid:
            return [f"xend died or was restarted under the fuzz\n{self.home.log_tail()}"]
        problems = []
        grown = rss(self.pid) - self.rss_before
        if grown >= RSS_GROWTH_LIMIT:
            problems.append(f"xend's RSS grew by {grown >> 20} MiB")
        print(f"\nxend's RSS: {self.rss_before >> 20} MiB before, {rss(self.pid) >> 20} MiB "
              f"after {self.findings.examples} requests; replies:\n{self.findings.coverage()}")
        if self.findings.seen:
            problems.append(f"{len(self.findings.seen)} kinds of failure in "
                            f"{self.findings.examples} requests:\n{self.findings.report()}")
        return problems


def kind_of(method: str, url: str, fields: tuple[tuple[str, str], ...] = ()) -> str:
    """A request's method, route and op (one it declares, else "other"): what a finding
    is filed under."""
    path = url.split("?", 1)[0]
    op = dict(fields).get("op") or ""
    if not op:
        found = re.search(r"\bop=([\w-]{1,30})", url)
        op = found.group(1) if found else ""
    for route in ROUTES:
        pattern = "^" + URL_PART.sub(lambda m: "[^/]*" if m.group(1) != "path" else ".*",
                                     re.escape(route.template).replace(r"\<", "<")
                                     .replace(r"\>", ">").replace(r"\:", ":")) + "$"
        if re.match(pattern, path):
            path = route.template
            op = op if op in route.ops or not op else "other"
            break
    return f"{method} {path}" + (f" op={op[:30]}" if op else "")


def domain_config(name: str, memory: object = 32, *extra: sxp.Value) -> str:
    return sxp.show(["vm", ["name", name], ["memory", str(memory)],
                     ["image", ["linux", ["kernel", KERNEL]]], *extra])


@pytest.fixture(scope="module")
def fuzzed(reaper: Reaper, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The module's xend under fuzz."""
    home = new_home("")
    try:
        home.start()
        xend = Xend(home)
        yield Target(xend, tmp_path_factory.mktemp("fuzz"))
        xend.close()
    finally:
        reaper.submit(str(home.root), home.tear_down)


@pytest.fixture
def target(fuzzed: Target) -> Target:
    """The xend under fuzz, its findings new for each test."""
    fuzzed.findings = Findings()
    fuzzed.log.new()
    fuzzed.ensure_domain()
    return fuzzed


# --- what the requests are made of ---------------------------------------------------------------

NASTY_TEXT = st.sampled_from([
    "", " ", "0", "-1", "1e9", "9" * 30, "-" + "9" * 30, "0x10", "\x00", "é", "\udcff"[:0] + "ü",
    "../../etc/passwd", "%2F", "a/b", "a" * 300, "a" * 5000, "(", ")", "((((", "(a (b",
    "'unterminated", '"', "\\", "\r\n", "${HOME}", "$(id)", "`id`", "*", "\t",
])
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=40),
                 st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
INTS = st.one_of(st.integers(-10, 100), st.integers(), st.sampled_from([
    1114112, 2**31, 2**63, 10**20, -2**63, 10**400]))


def sxp_values(depth: int = 3) -> st.SearchStrategy[sxp.Value]:
    atoms = st.one_of(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                              max_size=12), st.sampled_from(["vm", "name", "memory", "image",
                                                            "linux", "kernel", "device", "vbd",
                                                            "vif", "uname", "dev", "mode"]))
    return st.recursive(atoms, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def sxpr_texts(files: Path) -> st.SearchStrategy[str]:
    memory = st.one_of(INTS, TEXT)
    names = st.one_of(st.sampled_from(["fz", "Domain-0", "f1", "f2", "/x", "a b", "%2F"]), TEXT)
    disk = st.sampled_from([f"file:{files / 'junk'}", f"file:{files / 'nothere'}",
                            f"file:{files / 'folder'}", "phy:nothere", "file:", "nbd:x"])
    device = st.one_of(
        st.builds(lambda u, d, m: ["device", ["vbd", ["uname", u], ["dev", d], ["mode", m]]],
                  disk, st.sampled_from(["sda1", "xvda", "hda", "", "x" * 40]),
                  st.sampled_from(["r", "w", "rw", "x"])),
        st.builds(lambda mac: ["device", ["vif", ["mac", mac]]],
                  st.sampled_from(["aa:00:00:00:00:01", "zz", "", "ff:ff:ff:ff:ff:ff"])),
    )
    configs = st.builds(lambda n, m, extra: domain_config(n, m, *extra), names, memory,
                        st.lists(st.one_of(device, st.builds(lambda m: ["maxmem", str(m)], INTS),
                                           sxp_values()), max_size=3))
    return st.one_of(configs, st.builds(sxp.show, sxp_values()), TEXT,
                     st.integers(1, 3000).map(lambda n: "(" * n + ")" * n),  # deep
                     st.integers(1, 3000).map(lambda n: "(a " * n),  # deep, unclosed
                     st.just("(vm " + "(x y) " * 200_000 + ")"))  # past the body limit


WORDS = {  # parameters whose meaningful values random text would seldom hit
    "reason": ["poweroff", "reboot", "halt", "sysrq", "crash", "suspend"],
    "key": ["1", "a", "1114112", "9" * 20, "\x00", "ab", ""],
    "type": ["vbd", "vif", "pci", "console"],
    "role": ["admin", "viewer", "root"],
    "vbd": ["0", "769", "2049", "-1"],
    "vif": ["0", "1", "-1"],
    "idx": ["0", "769", "1", "-1"],
}


def param_values(param: Param, files: Path) -> st.SearchStrategy[str]:
    if param.name == "file":  # save and restore: only the test's own folder
        return st.sampled_from([str(files / n) for n in ("empty", "junk", "folder", "new.save",
                                                          "no/such/dir/x")] + ["", "relative"])
    if param.name == "destination":  # migrate: nowhere but closed loopback ports
        return st.sampled_from(["127.0.0.1", "127.0.0.1:1", "[::1]:1", "127.0.0.1:99999", "",
                                ":", "127.0.0.1:-1"])
    if param.name == "url":  # notify
        return st.sampled_from(["http://127.0.0.1:1/", "http://[::1]:1/x", "ftp://127.0.0.1/",
                                "", "http://", "http://127.0.0.1:1/" + "a" * 5000])
    if param.name == "next":
        return st.sampled_from(["/", "//evil.example", "/xend/" + "a" * 3000, "javascript:x"])
    words = WORDS.get(param.name)
    if words is not None:
        return st.one_of(st.sampled_from(words), TEXT)
    if param.kind is Kind.INT:
        return st.one_of(INTS.map(str), TEXT)
    if param.kind is Kind.SXPR:
        return sxpr_texts(files)
    if param.kind is Kind.BOOL:
        return st.one_of(st.sampled_from(["1", "0", "yes", "no", "maybe"]), TEXT)
    if param.name == "name":
        return st.one_of(st.sampled_from(["fuzz", "a" * 200, "", "tests2"]), TEXT).filter(
            lambda n: n != HARNESS_TOKEN)
    return TEXT


def url_part(converter: str | None, name: str, target: Target) -> st.SearchStrategy[str]:
    if converter == "int":
        return st.one_of(st.just(str(target.port)), INTS.map(str))
    if name == "dom":
        choices = st.sampled_from(["fz", "Domain-0", "0", "1", "nosuch", "%2F", "..", "a" * 300])
        return st.one_of(st.just("fz"), choices, TEXT.map(lambda t: quote(t, safe="")))
    if name == "name":  # a token's or a static file's
        choices = st.sampled_from(["fuzz", "style.css", "nosuch", "..", "%00"])
        return st.one_of(choices, TEXT.map(lambda t: quote(t, safe=""))).filter(
            lambda n: n != HARNESS_TOKEN)
    return st.one_of(st.sampled_from(["fuzz", "nosuch", "1"]),
                     TEXT.map(lambda t: quote(t, safe="")))


@dataclass(frozen=True)
class Call:
    """One HTTP request, made of parts hypothesis chose."""

    method: str
    path: str
    fields: tuple[tuple[str, str], ...]
    how: str  # query, form, multipart, raw-body
    accept: str

    def __repr__(self) -> str:  # hypothesis shows it; some are a MiB long
        return f"Call({self.describe()})"

    def describe(self) -> str:
        shown = " ".join(f"{k}={v[:60]!r}{'...' if len(v) > 60 else ''}"
                         f"{f'({len(v)} chars)' if len(v) > 60 else ''}" for k, v in self.fields)
        return f"{self.method} {self.path} [{self.how}, Accept {self.accept!r}] {shown}"


@st.composite
def calls(draw: st.DrawFn, target: Target) -> Call:
    route = draw(st.sampled_from(WEIGHTED))
    path = URL_PART.sub(lambda m: draw(url_part(m.group(1), m.group(2), target)), route.template)
    method = draw(st.sampled_from(["POST"] * 8 + ["GET"] * 3 + ["PUT", "DELETE", "HEAD",
                                                                 "OPTIONS", "PATCH"]))
    fields: list[tuple[str, str]] = []
    ops = route.ops
    with_op: bool = bool(ops) or draw(st.booleans())
    if with_op:
        op = draw(st.sampled_from(sorted(ops) * 4 + [""])) if ops else ""
        op = op or draw(TEXT)  # an op nobody declared
        if route.template == "/xend/login" and op == "login" and not LONG:
            op = "logon"  # PAM's delay after a wrong password would eat the run's time
        fields.append(("op", op))
        for param in ops.get(op, ()):
            if draw(st.integers(0, 9)) > 0:  # mostly there
                fields.append((param.name, draw(param_values(param, target.files))))
    if route.template in ("/xend/event/", "/xend/console/<int:port>/log"):
        # Long polls end soon: a short wait, or none with output to show at once.
        fields.append((draw(st.sampled_from(["timeout", "wait"])),
                       draw(st.sampled_from(["0", "1", "-1", "x", "", "9" * 30]))))
        if draw(st.booleans()):
            fields.append(("since", draw(st.sampled_from(["0", "1", "-5", "x", "9" * 30]))))
        fields = [(k, "0" if k in ("timeout", "wait") and v == "9" * 30 and
                   ("since", "9" * 30) in fields else v) for k, v in fields]
    extra = draw(st.lists(st.tuples(TEXT, TEXT), max_size=2))
    fields.extend(extra)
    how = draw(st.sampled_from(["query", "form", "form", "multipart", "raw-body"]))
    # Mostly a program's: a browser's request (text/html) must carry a form token.
    accept = draw(st.sampled_from(["application/sxp"] * 6 + [
        "text/html", "*/*", "", "application/json", "text/plain;q=0.1, text/html"]))
    return Call(method, path, tuple(fields), how, accept)


def send(client: httpx.Client, call: Call) -> httpx.Response:
    headers = {"Accept": call.accept}
    fields = [(k, v.encode("utf-8", "surrogatepass")) for k, v in call.fields]
    short = sum(len(k) + len(v) for k, v in call.fields) < 16_000  # fits a URL
    if short and (call.how == "query" or call.method in ("GET", "HEAD", "OPTIONS")):
        return client.request(call.method, call.path, params=list(call.fields), headers=headers)
    if call.how == "form":
        return client.request(call.method, call.path, data=dict(call.fields), headers=headers)
    if call.how == "multipart":
        files = [(k, (f"{k}.txt", v, "application/octet-stream")) for k, v in fields]
        return client.request(call.method, call.path, files=files, headers=headers)
    body = b"&".join(k + b"=" + v for k, v in ((k.encode("utf-8", "surrogatepass"), v)
                                                for k, v in fields))
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return client.request(call.method, call.path, content=body, headers=headers)


def run_call(target: Target, client: httpx.Client, call: Call, label: str = "") -> None:
    request = label + call.describe()
    kind = label + kind_of(call.method, call.path, call.fields)
    try:
        reply = send(client, call)
    except httpx.TimeoutException:
        target.check(kind, request, None, f"no reply within {REQUEST_TIMEOUT:g} s")
        return
    except httpx.HTTPError as error:
        target.check(kind, request, None, type(error).__name__)
        return
    target.check(kind, request + f" -> {reply.status_code} {reply.text[:120]!r}",
                 reply.status_code)


def fuzz_settings(examples: int) -> settings:
    """``examples`` requests (20x with XEND_FUZZ=long), the same ones each run unless long."""
    return settings(max_examples=examples * SCALE, deadline=None, database=None,
                    derandomize=not LONG, suppress_health_check=list(HealthCheck))


def test_no_admin_request_over_the_unix_socket_breaks_xend(target: Target) -> None:
    client = target.home.unix_http(timeout=REQUEST_TIMEOUT)

    @fuzz_settings(200)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        call = data.draw(calls(target))
        run_call(target, client, call)
        if target.findings.examples % 25 == 0:
            target.ensure_domain()

    with client:
        one()
    assert not (problems := target.problems()), "\n".join(problems)


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_no_request_over_tcp_breaks_xend(target: Target, with_token: bool) -> None:
    client = target.home.http(None if with_token else "")
    client.timeout = httpx.Timeout(REQUEST_TIMEOUT)

    @fuzz_settings(40)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        call = data.draw(calls(target))
        run_call(target, client, call, "TCP with a token: " if with_token else "TCP, no token: ")

    with client:
        one()
    assert not (problems := target.problems()), "\n".join(problems)


# --- raw requests: what httpx would never send ---------------------------------------------------


def raw_exchange(home: XendHome, request: bytes, timeout: float = REQUEST_TIMEOUT
                 ) -> tuple[int | None, bytes]:
    """Send ``request`` on a new Unix socket connection, end the sending side, read until
    xend closes; its status (None: no status line) and all it sent. TimeoutError: it hung."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(home.unix_path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        else:
            raise TimeoutError
    found = re.match(rb"HTTP/1\.[01] (\d{3})", bytes(reply))
    return (int(found.group(1)) if found else None), bytes(reply)


def multipart(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b""
    for name, value in parts:
        body += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name
                 + b"\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                 + value + b"\r\n")
    return body + b"--" + boundary + b"--\r\n"


@st.composite
def raw_requests(draw: st.DrawFn, target: Target) -> bytes:
    route = draw(st.sampled_from(ROUTES))
    path = URL_PART.sub(lambda m: str(target.port) if m.group(1) == "int" else "fz",
                        route.template).encode()
    path = draw(st.one_of(st.just(path), st.sampled_from([
        path + b"?op=%ZZ", path + b"?%C0%AF=1", path + b"%", path + b"?a=%FF%FE",
        b"/xend/domain/%C0%AE%C0%AE/", b"/xend/domain/\xff/", b"*", b"", b"xend",
        b"/xend/" + b"a" * 70_000, b"/xend/domain/fz/?op=pause&" + b"a=1&" * 20_000])))
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"FOO", b"G\x00T", b"", b"POST "]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/9.9", b""]))
    body = draw(st.one_of(
        st.sampled_from([b"", b"op=pause", b"op=\xff\xfe", b"op=%FF", b"op=pause&" * 50_000]),
        st.binary(max_size=300)))
    boundary = b"xyzzy"
    shape = draw(st.sampled_from(["plain", "multipart", "truncated-multipart", "chunked",
                                  "bad-chunked", "cl+te", "two-lengths", "short-body",
                                  "huge-length", "huge-header", "many-headers", "bad-header"]))
    headers = [b"Host: xend"]
    ctype = b"application/x-www-form-urlencoded"
    if shape in ("multipart", "truncated-multipart"):
        size = draw(st.sampled_from([10, MAX_BODY_BYTES - 400, MAX_BODY_BYTES + 10]))
        body = multipart(boundary, [(b"op", b"save"), (b"file", b"x" * size)])
        if shape == "truncated-multipart":
            body = body[:draw(st.integers(0, len(body) - 1))]
        ctype = b"multipart/form-data; boundary=" + boundary
    headers.append(b"Content-Type: " + draw(st.sampled_from(
        [ctype, b"multipart/form-data", b"multipart/form-data; boundary=", b"text/plain",
         b"application/x-www-form-urlencoded; charset=klingon", b"\xff\xfe"])))
    if shape == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    elif shape == "bad-chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(st.sampled_from([b"zz\r\nabc", b"fffffffffffffffff\r\n", b"5\r\nab",
                                     b"-1\r\n\r\n"]))
    elif shape == "cl+te":
        headers += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
    elif shape == "two-lengths":
        headers += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 5)]
    elif shape == "short-body":
        headers.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 1000))))
    elif shape == "huge-length":
        headers.append(b"Content-Length: " + draw(st.sampled_from(
            [b"99999999999999999999", b"-1", b"1e3", b"0x10", b" 5", b""])))
    else:
        headers.append(b"Content-Length: %d" % len(body))
    if shape == "huge-header":
        headers.append(b"X-Big: " + b"a" * draw(st.sampled_from([8000, 70_000, 1 << 20])))
    elif shape == "many-headers":
        headers += [b"X-%d: a" % i for i in range(draw(st.sampled_from([100, 2000])))]
    elif shape == "bad-header":
        headers.append(draw(st.sampled_from([b"NoColon", b": empty", b"X: \xff", b" folded",
                                             b"Authorization: Bearer \xff\x00",
                                             b"Authorization: " + b"a" * 5000])))
    return method + b" " + path + b" " + version + b"\r\n" + b"\r\n".join(headers) \
        + b"\r\n\r\n" + body


def show_raw(request: bytes) -> str:
    head, _, body = request.partition(b"\r\n\r\n")
    shown = head if len(head) < 400 else head[:200] + b"...(%d bytes)" % len(head)
    return f"RAW {shown!r} + body of {len(body)} bytes {body[:80]!r}"


def test_no_raw_request_breaks_xend(target: Target) -> None:
    @fuzz_settings(120)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        request = data.draw(raw_requests(target))
        shown = show_raw(request)
        line = request.split(b"\r\n", 1)[0]
        words = [*line.split(b" "), b""]
        kind = "raw " + kind_of(words[0].decode(errors="replace"),
                                words[1].decode(errors="replace"))
        try:
            status, reply = raw_exchange(target.home, request)
        except TimeoutError:
            target.check(kind, shown, None, f"no reply and no close within "
                         f"{REQUEST_TIMEOUT:g} s")
            return
        except OSError as error:
            target.check(kind, shown, None, type(error).__name__)
            return
        problem = None
        if status is None and re.match(rb"\S+ \S+ HTTP/1\.[01]$", line):
            problem = "closed without a status line"
        target.check(kind, f"{shown} -> {reply[:100]!r}", status, problem)
        if b"Content-Length" in request and b"Transfer-Encoding" in request and \
                status is not None and status < 400:
            target.findings.add("both Content-Length and Transfer-Encoding accepted", shown)

    one()
    assert not (problems := target.problems()), "\n".join(problems)


# --- slow senders --------------------------------------------------------------------------------


def test_slow_senders_are_served_and_do_not_hold_up_others(target: Target) -> None:
    """A request trickled a byte at a time is answered; a sender that stops half-way
    does not hold up anybody else."""
    request = b"GET /xend/node/ HTTP/1.1\r\nHost: xend\r\nConnection: close\r\n\r\n"
    stalled: list[socket.socket] = []
    try:
        for _ in range(8):  # stop half-way through the headers, or the body
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(target.home.unix_path))
            sock.sendall(b"POST /xend/domain/fz/ HTTP/1.1\r\nHost: xend\r\n"
                         b"Content-Length: 100\r\n" + (b"\r\nop=pa" if len(stalled) % 2 else b""))
            stalled.append(sock)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(str(target.home.unix_path))
            began = time.monotonic()
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.02)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
            assert time.monotonic() - began < REQUEST_TIMEOUT
        with target.home.unix_http(timeout=REQUEST_TIMEOUT) as client:
            assert client.get("/xend/domain/").status_code == 200
        target.check("slow senders", "a trickled GET beside 8 stalled POSTs", 200)
    finally:
        for sock in stalled:
            sock.close()
    assert not (problems := target.problems()), "\n".join(problems)


@pytest.mark.skipif(not LONG, reason="waits for xend's read timeout: XEND_FUZZ=long")
def test_a_stalled_sender_is_cut_off(target: Target) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(120)
        sock.connect(str(target.home.unix_path))
        sock.sendall(b"POST /xend/domain/fz/ HTTP/1.1\r\nHost: xend\r\nContent-Length: 100\r\n")
        began = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):
                pass
        assert time.monotonic() - began < 90, "xend never closed a stalled connection"

