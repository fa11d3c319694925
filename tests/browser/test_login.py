"""Logging in to xend from a real Chromium, as real local users checked by PAM.

The users are made by the tests (``conftest.py``): one in the group xend's config names
``xend-admin-group``, one in ``xend-viewer-group``. An admin logs in, sees the domains
and what can be done to them, and logs out; a wrong password gets nobody in; a viewer
sees the same pages without a single button that changes anything, and is refused when
it sends one of those forms all the same; a client that keeps guessing is held off; a
session ends when its time is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.browser.conftest import Accounts
from tests.support.home import XendHome
from tests.support.processes import wait_for
from tests.support.xend import Xend
from xend_actors import sxp
from xend_actors.access.ratelimit import MAX_FAILURES
from xend_actors.access.sessions import COOKIE
from xend_actors.web.login import REFUSED

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

EIGHT_HOURS = 8 * 3600  # the default xend-session-lifetime


def create_paused(home: XendHome, name: str) -> None:
    config = f"(vm (name {name}) (memory 32) (image (linux (kernel /boot/vmlinuz-sim))))"
    with home.http() as client:
        reply = client.post("/xend/domain/", data={"op": "create", "config": config})
    assert reply.status_code == 201, reply.text


def domain_names(home: XendHome) -> list[str]:
    return home.get_sxp("/xend/domain/")


def session_cookie(page: Page) -> dict | None:  # type: ignore[type-arg]
    found = [cookie for cookie in page.context.cookies() if cookie["name"] == COOKIE]
    return dict(found[0]) if found else None


def with_session(home: XendHome, session: str) -> httpx.Client:
    """A program sending the browser's session cookie (and no token)."""
    client = home.http(token="")
    client.cookies.set(COOKIE, session, domain="127.0.0.1", path="/xend/")
    return client


def test_an_admin_logs_in_sees_the_domains_and_their_buttons_and_logs_out(
        shared_home: XendHome, new_page, log_in, accounts: Accounts, screenshot) -> None:
    base = shared_home.url
    create_paused(shared_home, "web1")
    page: Page = new_page()
    with page.expect_response(f"{base}/xend/static/xend.css") as style:
        page.goto(f"{base}/xend/domain/web1")
    assert style.value.status == 200  # the login page looks like the others
    expect(page).to_have_url(f"{base}/xend/login?next=/xend/domain/web1")
    expect(page.get_by_role("heading", name="Log in to xend")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    screenshot(page, "login-form")

    page.get_by_label("User name").fill(accounts.admin.name)
    page.get_by_label("Password").fill(accounts.admin.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/xend/domain/web1")  # where it was going
    expect(page.locator("#who")).to_contain_text(accounts.admin.name)
    expect(page.locator("#who")).to_contain_text("admin")
    for action in ("Pause", "Destroy", "Save", "Migrate", "Add device"):
        expect(page.get_by_role("button", name=action, exact=True)).to_be_visible()
    page.get_by_role("link", name="Domains", exact=True).click()
    expect(page.locator("tr[data-domain='Domain-0']")).to_be_visible()
    expect(page.locator("tr[data-domain='web1']").get_by_role("button", name="Unpause")
           ).to_be_visible()
    expect(page.get_by_role("button", name="Create domain")).to_be_visible()
    screenshot(page, "admin-domains")

    cookie = session_cookie(page)
    assert cookie is not None
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/xend/"
    assert not cookie["secure"]  # plain HTTP on loopback here
    assert abs(cookie["expires"] - (time.time() + EIGHT_HOURS)) < 120
    assert COOKIE not in page.evaluate("document.cookie")  # no script reads it

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/xend/login")
    assert session_cookie(page) is None
    page.goto(f"{base}/xend/domain/")
    expect(page).to_have_url(f"{base}/xend/login?next=/xend/domain/")
    # The session is over at xend too, not only forgotten by this browser.
    with with_session(shared_home, cookie["value"]) as program:
        assert program.get("/xend/domain/").status_code == 401


def test_a_wrong_password_is_refused_with_a_message_and_no_cookie(
        shared_home: XendHome, new_page, log_in, accounts: Accounts, screenshot) -> None:
    page: Page = new_page()
    reply = log_in(page, shared_home.url, accounts.admin,
                   password="not-" + accounts.admin.password, next="/xend/node/")
    assert reply.status == 401
    expect(page.get_by_role("alert")).to_have_text(REFUSED)
    expect(page.get_by_label("User name")).to_have_value(accounts.admin.name)
    expect(page.get_by_label("Password")).to_have_value("")
    assert session_cookie(page) is None
    screenshot(page, "refused")

    # The right one next time, and on to where it was going.
    page.get_by_label("Password").fill(accounts.admin.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{shared_home.url}/xend/node/")
    expect(page.get_by_role("heading", name="Node", exact=True)).to_be_visible()


def test_a_viewer_sees_no_action_buttons_and_its_crafted_posts_are_refused(
        shared_home: XendHome, logged_in, accounts: Accounts, screenshot) -> None:
    base = shared_home.url
    create_paused(shared_home, "web1")
    page: Page = logged_in(base, user=accounts.viewer)
    expect(page.locator("#who")).to_contain_text(accounts.viewer.name)
    expect(page.locator("#who")).to_contain_text("viewer")
    row = page.locator("tr[data-domain='web1']")
    expect(row.locator("td.state")).to_have_text("paused")
    # The one button on every page is the logout; no form but its own.
    expect(page.get_by_role("button")).to_have_text(["Log out"])
    expect(page.locator("form")).to_have_count(1)
    expect(page.get_by_role("link", name="Create")).to_have_count(0)
    screenshot(page, "viewer-domains")
    for path in ("/xend/domain/web1", "/xend/vnet/", "/xend/node/"):
        page.goto(f"{base}{path}")
        expect(page.get_by_role("button")).to_have_text(["Log out"])
    page.goto(f"{base}/xend/domain/web1")
    expect(page.get_by_role("heading", name="Domain web1")).to_be_visible()
    screenshot(page, "viewer-domain")

    # A form of its own making, with a good form token (the logout form's): refused,
    # and the page says why.
    token = page.locator("form input[name=csrf_token]").input_value()
    with page.expect_response(f"{base}/xend/domain/web1") as posted:
        page.evaluate("""token => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = location.pathname;
            for (const [name, value] of Object.entries(
                    {op: "destroy", reason: "halt", csrf_token: token})) {
                const field = form.appendChild(document.createElement("input"));
                field.type = "hidden"; field.name = name; field.value = value;
            }
            document.body.append(form);
            form.submit();
        }""", token)
    assert posted.value.status == 403
    expect(page.get_by_role("heading", name="Refused")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("viewer")
    screenshot(page, "viewer-refused")

    # As a program with the browser's session: refused too.
    cookie = session_cookie(page)
    assert cookie is not None
    with with_session(shared_home, cookie["value"]) as program:
        assert program.get("/xend/domain/web1").status_code == 200
        refused = program.post("/xend/domain/web1", data={"op": "pause"})
        assert refused.status_code == 403
        assert "viewer" in sxp.parse(refused.text)[1]
    assert "web1" in domain_names(shared_home)
    assert "p" in sxp.child_value(shared_home.get_sxp("/xend/domain/web1"), "state")


def test_too_many_failed_logins_hold_the_client_off(
        fresh_xend: Callable[..., Xend], new_page, log_in, accounts: Accounts,
        screenshot) -> None:
    home = fresh_xend(accounts.config()).home
    page: Page = new_page()
    page.goto(f"{home.url}/xend/login")
    token = page.locator("input[name=csrf_token]").input_value()
    # A guesser's script on the login page itself, sending many guesses at once, as the
    # form does (a fetch of its own Accept, */*, is a program's: refused before PAM).
    statuses = page.evaluate("""([user, token, count]) => Promise.all(
        Array.from({length: count}, (_, i) => fetch("/xend/login", {method: "POST",
            headers: {Accept: "text/html"},
            body: new URLSearchParams({op: "login", username: user,
                                       password: "guess-" + i, csrf_token: token})})
            .then(reply => reply.status)))""",
        [accounts.admin.name, token, MAX_FAILURES])
    assert statuses == [401] * MAX_FAILURES

    # Now even the right password is not tried.
    reply = log_in(page, home.url, accounts.admin)
    assert reply.status == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    expect(page.get_by_role("alert")).to_contain_text("try again in")
    assert session_cookie(page) is None
    screenshot(page, "held-off")


def test_an_expired_session_sends_the_browser_to_the_login_again(
        fresh_xend: Callable[..., Xend], logged_in, accounts: Accounts) -> None:
    home = fresh_xend(accounts.config() + "(xend-session-lifetime 2)\n").home
    page: Page = logged_in(home.url)
    expect(page.locator("tr[data-domain='Domain-0']")).to_be_visible()
    cookie = session_cookie(page)
    assert cookie is not None and abs(cookie["expires"] - (time.time() + 2)) < 5
    # The browser would drop the cookie itself; keep it, so xend must refuse it.
    page.context.add_cookies([{**cookie, "expires": time.time() + 3600}])

    browser_get = {"User-Agent": "Mozilla/5.0", "Accept": "text/html"}

    def refused() -> bool:
        with with_session(home, cookie["value"]) as client:
            return client.get("/xend/domain/", headers=browser_get).status_code == 303

    wait_for(refused, 15, "the session to expire")
    page.goto(f"{home.url}/xend/domain/")
    expect(page).to_have_url(f"{home.url}/xend/login?next=/xend/domain/")
    assert session_cookie(page) is not None  # sent, and not taken
