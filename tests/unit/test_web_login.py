"""The login and logout pages in process: the real gate, app, pages and sessions, with
PAM's password check stood in for (the real PAM logins are in tests/browser).

The roles come from the real user and group databases: root is an admin, the system
user ``daemon`` is a viewer through its group, ``nobody`` has no role.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from http.cookies import SimpleCookie

import pytest
from werkzeug import Request
from werkzeug.test import Client, TestResponse

from tests.support.gates import new_keys
from tests.support.processes import wait_for
from xend_actors import sxp
from xend_actors.access.identity import Principal, Role, Via
from xend_actors.access.logins import MAX_AT_ONCE, PamLogins
from xend_actors.access.ratelimit import FailureLimiter
from xend_actors.access.sessions import COOKIE, Sessions
from xend_actors.config import XendConfig
from xend_actors.errors import TooManyRequests
from xend_actors.web.app import XendApp
from xend_actors.web.browser import BrowserSite
from xend_actors.web.csrf import FIELD
from xend_actors.web.forms import Param
from xend_actors.web.gate import Door, Gate, Keys
from xend_actors.web.login import HOME, REFUSED, LoginResource, LogoutResource, next_path
from xend_actors.web.resource import Resource, op

BROWSER = {"User-Agent": "Mozilla/5.0", "Accept": "text/html,application/xhtml+xml"}
OWN = "http://localhost"
PASSWORDS = {"root": "root-pw", "daemon": "daemon-pw", "nobody": "nobody-pw"}
WRONG = "wrong-pw-7Kq"
LIFETIME = 600


class Counter(Resource):
    """A page behind the gate whose op visibly changes it."""

    def __init__(self) -> None:
        self.count = 0

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        return ["count", str(self.count)]

    @op("bump", params=(Param("by"),))
    def bump(self, request: Request, by: str) -> str:
        self.count += int(by)
        return "0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(clock: Clock) -> Keys:
    made = new_keys()
    return Keys(made.tokens, Sessions(LIFETIME, clock=clock), FailureLimiter(max_failures=3))


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def app(keys: Keys, counter: Counter) -> Gate:
    config = replace(XendConfig(), viewer_group="daemon", session_lifetime=LIFETIME)
    logins = PamLogins(keys.limiter, config.admin_group, config.viewer_group,
                       check=lambda user, password: PASSWORDS.get(user) == password,
                       fail_time=0.01)
    xend = XendApp([("/xend/login", LoginResource(config, keys, logins)),
                    ("/xend/logout", LogoutResource(keys)),
                    ("/xend/counter/", counter)], site=BrowserSite())
    return Gate(xend, Door.TCP, config, keys)


@pytest.fixture
def client(app: Gate) -> Client:
    return Client(app)


def token_on(page: TestResponse) -> str:
    found = re.search(rf'name="{FIELD}" value="([^"]+)"', page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def log_in(client: Client, user: str, password: str, next: str = "/xend/counter/",
           **headers: str) -> TestResponse:
    form = client.get(f"/xend/login?next={next}", headers=BROWSER)
    assert form.status_code == 200
    data = {"op": "login", "username": user, "password": password, "next": next,
            FIELD: token_on(form)}
    return client.post("/xend/login", data=data,
                       headers={**BROWSER, "Origin": OWN, **headers})


def session_cookie(reply: TestResponse) -> str | None:
    for header in reply.headers.getlist("Set-Cookie"):
        if header.startswith(f"{COOKIE}="):
            return header
    return None


def test_a_page_without_a_login_sends_the_browser_to_the_login_form(client: Client) -> None:
    reply = client.get("/xend/counter/?x=1", headers=BROWSER)
    assert reply.status_code == 303
    assert reply.headers["Location"] == "/xend/login?next=/xend/counter/%3Fx%3D1"
    form = client.get(reply.headers["Location"], headers=BROWSER)
    page = form.get_data(as_text=True)
    assert form.status_code == 200
    assert 'name="next" value="/xend/counter/?x=1"' in page
    assert 'type="password"' in page and "Log out" not in page


def test_a_good_login_sets_a_strict_session_cookie_and_goes_on(client: Client,
                                                              counter: Counter) -> None:
    reply = log_in(client, "root", "root-pw")
    assert reply.status_code == 303
    assert reply.headers["Location"] == "/xend/counter/"
    cookie = session_cookie(reply)
    assert cookie is not None
    morsel = SimpleCookie(cookie)[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Strict"
    assert morsel["path"] == "/xend/" and morsel["max-age"] == str(LIFETIME)
    assert not morsel["secure"]  # plain HTTP here; over TLS, below

    page = client.get("/xend/counter/", headers=BROWSER)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "root" in html and "admin" in html and "Log out" in html
    bump = {"op": "bump", "by": "2", FIELD: token_on(page)}
    assert client.post("/xend/counter/", data=bump,
                       headers={**BROWSER, "Origin": OWN}).status_code == 303
    assert counter.count == 2


def test_over_tls_the_cookie_is_secure(app: Gate) -> None:
    client = Client(app)
    tls = "https://localhost"
    form = client.get("/xend/login", base_url=tls, headers=BROWSER)
    reply = client.post("/xend/login", base_url=tls,
                        data={"op": "login", "username": "root", "password": "root-pw",
                              FIELD: token_on(form)},
                        headers={**BROWSER, "Origin": tls})
    assert reply.status_code == 303 and reply.headers["Location"] == HOME
    cookie = session_cookie(reply)
    assert cookie is not None and SimpleCookie(cookie)[COOKIE]["secure"]


@pytest.mark.parametrize(("user", "password"), [
    ("root", WRONG),  # a wrong password
    ("nosuchuser", WRONG),  # nobody of that name
    ("nobody", "nobody-pw"),  # the right password, but in neither group
    ("root\nx", "root-pw"),  # not a user name at all
])
def test_a_refused_login_says_the_same_and_sets_no_session(client: Client, user: str,
                                                           password: str) -> None:
    reply = log_in(client, user, password)
    html = reply.get_data(as_text=True)
    assert reply.status_code == 401
    assert REFUSED in html
    assert session_cookie(reply) is None
    assert password not in html  # never written back
    assert 'name="next" value="/xend/counter/"' in html  # still going there
    assert client.get("/xend/counter/", headers=BROWSER).status_code == 303


def test_a_viewer_sees_no_forms_and_its_post_is_refused(client: Client,
                                                        counter: Counter) -> None:
    assert log_in(client, "daemon", "daemon-pw").status_code == 303
    page = client.get("/xend/counter/", headers=BROWSER)
    html = page.get_data(as_text=True)
    assert "daemon" in html and "viewer" in html
    assert 'name="op" value="bump"' not in html
    assert 'value="logout"' in html  # the one form a viewer has
    crafted = {"op": "bump", "by": "5", FIELD: token_on(page)}
    reply = client.post("/xend/counter/", data=crafted, headers={**BROWSER, "Origin": OWN})
    assert reply.status_code == 403
    assert "Refused" in reply.get_data(as_text=True)
    assert "viewer" in reply.get_data(as_text=True)
    assert counter.count == 0


def test_logout_ends_the_session(client: Client) -> None:
    reply = log_in(client, "root", "root-pw")
    old = SimpleCookie(session_cookie(reply))[COOKIE].value
    page = client.get("/xend/counter/", headers=BROWSER)
    out = client.post("/xend/logout", data={"op": "logout", FIELD: token_on(page)},
                      headers={**BROWSER, "Origin": OWN})
    assert out.status_code == 303 and out.headers["Location"] == "/xend/login"
    cleared = SimpleCookie(session_cookie(out))[COOKIE]
    assert cleared.value == "" and cleared["path"] == "/xend/"
    assert client.get("/xend/counter/", headers=BROWSER).status_code == 303
    # The old cookie, kept by someone, is dead too.
    replay = Client(client.application)
    replay.set_cookie(COOKIE, old, path="/xend/")
    assert replay.get("/xend/counter/", headers=BROWSER).status_code == 303


def test_a_session_ends_with_its_lifetime(client: Client, clock: Clock) -> None:
    log_in(client, "root", "root-pw")
    assert client.get("/xend/counter/", headers=BROWSER).status_code == 200
    clock.now += LIFETIME + 1
    reply = client.get("/xend/counter/", headers=BROWSER)
    assert reply.status_code == 303 and reply.headers["Location"].startswith("/xend/login")


def test_a_login_from_another_site_or_without_the_form_token_is_refused(
        client: Client) -> None:
    reply = log_in(client, "root", "root-pw", Origin="http://evil.example")
    assert reply.status_code == 403 and session_cookie(reply) is None
    client.get("/xend/login", headers=BROWSER)
    reply = client.post("/xend/login", data={"op": "login", "username": "root",
                                             "password": "root-pw"},
                        headers={**BROWSER, "Origin": OWN})
    assert reply.status_code == 403 and session_cookie(reply) is None


def test_programs_do_not_log_in(client: Client) -> None:
    reply = client.post("/xend/login", data={"op": "login", "username": "root",
                                             "password": "root-pw"},
                        headers={"Accept": "application/sxp"})
    assert reply.status_code == 400 and b"API token" in reply.data
    assert session_cookie(reply) is None


def test_too_many_failures_are_refused_before_the_password_is_checked(
        client: Client) -> None:
    for _ in range(3):
        assert log_in(client, "root", WRONG).status_code == 401
    reply = log_in(client, "root", "root-pw")
    assert reply.status_code == 429
    assert "Too many failed logins" in reply.get_data(as_text=True)
    assert session_cookie(reply) is None


@pytest.mark.parametrize(("given", "goes_to"), [
    ("/xend/domain/web1", "/xend/domain/web1"),
    ("/xend/domain/?detail=1", "/xend/domain/?detail=1"),
    ("/xend/domain/caf\u00e9", "/xend/domain/caf%C3%A9"),
    ("/xend/x\r\nSet-Cookie: a=b", "/xend/x%0D%0ASet-Cookie:%20a=b"),
    (None, HOME),
    ("", HOME),
    ("https://evil.example/xend/", HOME),
    ("//evil.example/xend/", HOME),
    ("/\\evil.example/xend/", HOME),
    ("/xend/\\\\evil.example", HOME),
    ("/xend//evil.example", HOME),
    ("javascript:alert(1)", HOME),
    ("/etc/passwd", HOME),
    ("/xend/login?next=/xend/", HOME),
    ("/xend/" + "a" * 3000, HOME),
])
def test_the_next_page_is_always_one_of_xends_own(given: str | None, goes_to: str) -> None:
    assert next_path(given) == goes_to


def test_pam_is_asked_only_about_users_with_a_role_and_only_a_few_at_once() -> None:
    asked: list[str] = []
    inside, peak = 0, 0
    lock, go = threading.Lock(), threading.Event()

    def check(user: str, password: str) -> bool:
        nonlocal inside, peak
        with lock:
            asked.append(user)
            inside += 1
            peak = max(peak, inside)
        go.wait(10)
        with lock:
            inside -= 1
        return PASSWORDS.get(user) == password

    logins = PamLogins(FailureLimiter(), viewer_group="daemon", check=check, fail_time=0.01)
    assert logins.principal("nobody", "nobody-pw", "10.0.0.1") is None
    assert logins.principal("nosuchuser", "x", "10.0.0.1") is None
    assert asked == []  # refused without PAM: their passwords are never tried

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(
        logins.principal("root", "root-pw", "10.0.0.2"))) for _ in range(MAX_AT_ONCE + 2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: inside == MAX_AT_ONCE, 10, "PAM checks to start")
    go.set()
    for thread in threads:
        thread.join(10)
    assert peak == MAX_AT_ONCE
    assert len(results) == MAX_AT_ONCE + 2
    assert all(getattr(p, "role", None) is Role.ADMIN for p in results)
    assert logins.principal("daemon", "daemon-pw", "10.0.0.3") == Principal(
        "daemon", Role.VIEWER, Via.SESSION)


def test_guesses_sent_all_at_once_are_not_all_tried() -> None:
    limit = 3
    asked: list[str] = []
    go = threading.Event()

    def check(user: str, password: str) -> bool:
        asked.append(password)
        go.wait(10)
        return False

    logins = PamLogins(FailureLimiter(max_failures=limit), check=check, fail_time=0.01)
    outcomes: list[str] = []

    def guess(number: int) -> None:
        try:
            outcomes.append(repr(logins.principal("root", f"guess-{number}", "10.0.0.9")))
        except TooManyRequests:
            outcomes.append("held off")

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(asked) == MAX_AT_ONCE, 10, "the first guesses to reach PAM")
    go.set()
    for thread in threads:
        thread.join(10)
    # Those already at PAM finish; once the limit is reached nobody else gets a turn.
    assert len(asked) <= limit - 1 + MAX_AT_ONCE
    assert outcomes.count("None") == len(asked)
    assert outcomes.count("held off") == 20 - len(asked)
