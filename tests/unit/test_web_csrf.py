"""Browser forms and cross-site requests: only xend's own pages change anything.

A browser's POST needs the form token bound to its cookie and an Origin (or Referer)
of xend itself; any client's op is refused when the request comes from another site.
Programs (no browser headers) are unaffected.
"""

from __future__ import annotations

import re

import pytest
from werkzeug import Request
from werkzeug.test import Client

from tests.support.gates import open_gate
from xend_actors import sxp
from xend_actors.errors import Conflict
from xend_actors.web.app import XendApp
from xend_actors.web.browser import BrowserSite
from xend_actors.web.csrf import COOKIE, FIELD, CsrfGuard, origin_of
from xend_actors.web.forms import Param
from xend_actors.web.resource import Resource, op

BROWSER = {"User-Agent": "Mozilla/5.0", "Accept": "text/html,application/xhtml+xml"}
OWN = "http://localhost"


class Counter(Resource):
    """A resource whose ops visibly change its state."""

    def __init__(self) -> None:
        self.count = 0

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        return ["count", str(self.count)]

    @op("bump", params=(Param("by"),))
    def bump(self, request: Request, by: str) -> str:
        self.count += int(by)
        return "0"

    @op("clash", params=(Param("note"),))
    def clash(self, request: Request, note: str) -> None:
        raise Conflict(f"cannot: {note}")

    @op("peek", on_get=True)
    def peek(self, request: Request) -> str:
        self.count += 100
        return "0"


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def client(counter: Counter) -> Client:
    return Client(open_gate(XendApp([("/xend/counter/", counter)], site=BrowserSite())))


def form_token(client: Client) -> str:
    """Load the page as a browser does and read the token off its forms."""
    page = client.get("/xend/counter/", headers=BROWSER).get_data(as_text=True)
    found = re.search(rf'name="{FIELD}" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def browser_post(client: Client, data: dict, **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/xend/counter/", data=data, headers={**BROWSER, **headers})


def test_a_page_sets_the_cookie_its_forms_token_is_bound_to(client: Client) -> None:
    reply = client.get("/xend/counter/", headers=BROWSER)
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert f'name="{FIELD}"' in reply.get_data(as_text=True)
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]


def test_own_form_runs_the_op_and_redirects_back(client: Client, counter: Counter) -> None:
    reply = browser_post(client, {"op": "bump", "by": "2", FIELD: form_token(client)},
                         Origin=OWN)
    assert reply.status_code == 303
    assert reply.headers["Location"] == "/xend/counter/?done=bump"
    assert counter.count == 2
    page = client.get(reply.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "bump: done." in page and "(count 2)" in page


@pytest.mark.parametrize(("next_page", "lands_on"), [
    ("/xend/counter/?view=1", "/xend/counter/?view=1&done=bump"),
    ("http://localhost/xend/other/", "/xend/other/?done=bump"),
    ("http://evil.example/xend/counter/", "/xend/counter/?done=bump"),
    ("//evil.example/xend/counter/", "/xend/counter/?done=bump"),
    ("/elsewhere", "/xend/counter/?done=bump"),
])
def test_after_a_form_the_browser_stays_on_this_xend(client: Client, next_page: str,
                                                     lands_on: str) -> None:
    reply = browser_post(client, {"op": "bump", "by": "1", "next": next_page,
                                  FIELD: form_token(client)}, Origin=OWN)
    assert reply.status_code == 303
    assert reply.headers["Location"] == lands_on


def test_referer_stands_in_for_a_missing_origin(client: Client, counter: Counter) -> None:
    reply = browser_post(client, {"op": "bump", "by": "1", FIELD: form_token(client)},
                         Referer=f"{OWN}/xend/counter/")
    assert reply.status_code == 303
    assert counter.count == 1


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:8080"},  # another port is another origin
    {"Origin": "null"},
    {"Referer": "http://evil.example/page"},
    {},  # neither Origin nor Referer
    {"Origin": OWN, "Sec-Fetch-Site": "cross-site"},
])
def test_form_from_elsewhere_is_refused_even_with_a_valid_token(
        client: Client, counter: Counter, headers: dict) -> None:
    reply = browser_post(client, {"op": "bump", "by": "1", FIELD: form_token(client)},
                         **headers)
    assert reply.status_code == 403
    assert "Refused" in reply.get_data(as_text=True)
    assert counter.count == 0


@pytest.mark.parametrize("token", [None, "", "0" * 64])
def test_missing_or_wrong_token_is_refused(client: Client, counter: Counter,
                                           token: str | None) -> None:
    form_token(client)  # the browser has its cookie
    data = {"op": "bump", "by": "1"} | ({FIELD: token} if token is not None else {})
    reply = browser_post(client, data, Origin=OWN)
    assert reply.status_code == 403
    assert "reload the page" in reply.get_data(as_text=True)
    assert counter.count == 0


def test_token_of_another_browser_or_an_earlier_xend_is_refused(counter: Counter) -> None:
    app = open_gate(XendApp([("/xend/counter/", counter)], site=BrowserSite()))
    victim, attacker = Client(app), Client(app)
    stolen = form_token(attacker)  # a token bound to the attacker's own cookie
    form_token(victim)
    reply = victim.post("/xend/counter/", data={"op": "bump", "by": "1", FIELD: stolen},
                        headers={**BROWSER, "Origin": OWN})
    assert reply.status_code == 403
    restarted = Client(open_gate(XendApp([("/xend/counter/", counter)], site=BrowserSite())))
    restarted.set_cookie(COOKIE, victim.get_cookie(COOKIE).value)
    reply = restarted.post("/xend/counter/",
                           data={"op": "bump", "by": "1", FIELD: form_token(victim)},
                           headers={**BROWSER, "Origin": OWN})
    assert reply.status_code == 403
    assert counter.count == 0


def test_browser_get_never_runs_an_op(client: Client, counter: Counter) -> None:
    reply = client.get("/xend/counter/?op=peek", headers=BROWSER)
    assert reply.status_code == 200
    assert counter.count == 0


def test_failed_op_shows_its_message_beside_the_form_with_the_values_kept(
        client: Client) -> None:
    reply = browser_post(client, {"op": "clash", "note": "<b>x</b>", "form": "clash",
                                  FIELD: form_token(client)}, Origin=OWN)
    assert reply.status_code == 409
    page = reply.get_data(as_text=True)
    form = page[page.index('id="form-clash"'):]
    form = form[:form.index("</form>")]
    assert re.search(r'role="alert">.*cannot: &lt;b&gt;x&lt;/b&gt;</p>', form)
    assert 'value="&lt;b&gt;x&lt;/b&gt;"' in form
    assert "<b>x</b>" not in page


def test_programs_are_unaffected(client: Client, counter: Counter) -> None:
    reply = client.post("/xend/counter/", data={"op": "bump", "by": "3"})
    assert reply.status_code == 200 and reply.get_data(as_text=True) == "0"
    reply = client.get("/xend/counter/?op=peek", headers={"Accept": "application/sxp"})
    assert reply.status_code == 200
    assert counter.count == 103


@pytest.mark.parametrize("headers", [
    {"Accept": "application/sxp", "User-Agent": "Mozilla/5.0", "Origin": "http://evil.example"},
    {"Accept": "application/sxp", "User-Agent": "Mozilla/5.0", "Sec-Fetch-Site": "same-site"},
])
def test_a_page_elsewhere_cannot_pass_for_a_program(client: Client, counter: Counter,
                                                    headers: dict) -> None:
    assert client.post("/xend/counter/", data={"op": "bump", "by": "1"},
                       headers=headers).status_code == 403
    assert client.get("/xend/counter/?op=peek", headers=headers).status_code == 403
    assert client.get("/xend/counter/", headers=headers).status_code == 200  # reading is fine
    assert counter.count == 0


@pytest.mark.parametrize(("url", "origin"), [
    ("http://LocalHost", "http://localhost:80"),
    ("https://xen.example:8443/x?y", "https://xen.example:8443"),
    ("http://[::1]:8000", "http://::1:8000"),
    ("null", None),
    ("http://bad:port", None),
])
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_token_is_bound_to_the_cookie_and_the_secret() -> None:
    guard = CsrfGuard(b"k" * 32)
    assert guard.token("a" * 43) == CsrfGuard(b"k" * 32).token("a" * 43)
    assert guard.token("a" * 43) != guard.token("b" * 43)
    assert guard.token("a" * 43) != CsrfGuard(b"j" * 32).token("a" * 43)
