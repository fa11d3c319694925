"""The console's terminal on the domain page, in a real Chromium against a real xend whose
consoles have no TCP port (the default): an admin logged in with PAM types on the guest
through xterm.js and the WebSocket, and logs out; a viewer only reads the scrollback; a
page of another site cannot open the console, even with credentials the browser sends
it (an API token on every request: a session cookie, SameSite=Strict, it would not)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.browser.conftest import Accounts
from tests.browser.test_admin_pages import other_site  # noqa: F401  (a fixture)
from tests.support.home import XendHome
from tests.support.processes import wait_for
from xend_actors import sxp

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared_xend_config(accounts: Accounts) -> str:
    return "(console-tcp no)\n" + accounts.config()


def start_domain(home: XendHome, name: str) -> str:
    """Create and unpause a sim domain; its console port."""
    config = f"(vm (name {name}) (memory 32) (image (linux (kernel /boot/vmlinuz-sim))))"
    with home.http() as client:
        made = client.post("/xend/domain/", data={"op": "create", "config": config})
        assert made.status_code == 201, made.text
        assert client.post(f"/xend/domain/{name}", data={"op": "unpause"}).status_code == 200
    console = sxp.child(sxp.parse(made.text), "console")
    return str(sxp.child_value(console, "console_port"))



def console_status(home: XendHome, port: str) -> str:
    return str(sxp.child_value(home.get_sxp(f"/xend/console/{port}"), "status"))


def scrollback(home: XendHome, port: str) -> bytes:
    with home.http() as client:
        return client.get(f"/xend/console/{port}/log").content


@pytest.fixture
def page_with(browser: Browser) -> Iterator[Callable[[str], Page]]:
    """A factory of pages whose every request (WebSocket handshakes too) carries this API
    token, as a logged-in browser carries its session."""
    contexts = []

    def make(token: str) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      extra_http_headers={"Authorization": f"Bearer {token}"})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def test_an_admin_types_on_the_guest_in_the_domain_page_terminal(
        shared_home: XendHome, logged_in, screenshot) -> None:
    port = start_domain(shared_home, "term1")
    page: Page = logged_in(shared_home.url)  # the admin, with a PAM password
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text and "connect-src" in message.text
            else None)
    page.goto(f"{shared_home.url}/xend/domain/term1")
    terminal = page.locator("#console-terminal")
    expect(terminal.locator("[data-state]")).to_have_text("Not connected")
    assert console_status(shared_home, port) == "listening"  # a look takes nothing
    terminal.get_by_role("button", name="Connect").click()
    expect(terminal.locator("[data-state]")).to_have_text("Connected")
    rows = terminal.locator(".xterm-rows")
    expect(rows).to_contain_text("Booting simulated Linux")  # what nobody had seen yet
    wait_for(lambda: console_status(shared_home, port) == "connected", what="the attach")

    page.keyboard.type("echo hi-from-browser")
    page.keyboard.press("Enter")
    reply = rows.locator("> div").filter(has_text=re.compile(r"^hi-from-browser\s*$"))
    expect(reply).to_have_count(1)
    assert b"echo hi-from-browser\r\nhi-from-browser\r\n# " in scrollback(shared_home, port)
    # The rows have xterm.js's own colours, given despite the page's style-src 'self'.
    assert rows.evaluate("rows => getComputedStyle(rows).color") == "rgb(255, 255, 255)"
    assert refused == []  # the same-origin ws: is allowed by connect-src 'self'
    screenshot(page, "terminal")

    terminal.get_by_role("button", name="Disconnect").click()
    expect(terminal.locator("[data-state]")).to_have_text("Disconnected")
    wait_for(lambda: console_status(shared_home, port) == "listening", what="the detach")
    terminal.get_by_role("button", name="Connect").click()  # and again, then log out
    expect(terminal.locator("[data-state]")).to_have_text("Connected")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to xend")).to_be_visible()
    wait_for(lambda: console_status(shared_home, port) == "listening",
             what="the terminal gone with the page")


def test_a_second_terminal_gets_the_refusal_line(
        shared_home: XendHome, logged_in) -> None:
    port = start_domain(shared_home, "term2")
    domid = sxp.child_value(shared_home.get_sxp("/xend/domain/term2"), "id")
    first, second = logged_in(shared_home.url), logged_in(shared_home.url)
    for page in (first, second):
        page.goto(f"{shared_home.url}/xend/domain/term2")
    first.get_by_role("button", name="Connect").click()
    expect(first.locator("#console-terminal").locator("[data-state]")).to_have_text("Connected")
    second.get_by_role("button", name="Connect").click()
    expect(second.locator(".xterm-rows")).to_contain_text(
        f"Cannot connect to console {port} on domain {domid}")
    expect(second.locator("#console-terminal").locator("[data-state]")).to_have_text(
        "Disconnected")
    assert console_status(shared_home, port) == "connected"  # still the first's


def test_a_viewer_sees_the_scrollback_and_no_terminal(
        shared_home: XendHome, logged_in, accounts: Accounts, screenshot) -> None:
    port = start_domain(shared_home, "term3")
    wait_for(lambda: b"# " in scrollback(shared_home, port), what="the guest's prompt")
    page: Page = logged_in(shared_home.url, user=accounts.viewer)
    page.goto(f"{shared_home.url}/xend/domain/term3")
    expect(page.get_by_label("Console scrollback")).to_contain_text("Booting simulated Linux")
    expect(page.locator("#console-terminal")).to_have_count(0)
    screenshot(page, "viewer")
    # Nor can its script open the console itself.
    closed = page.evaluate("""url => new Promise(done => {
        const socket = new WebSocket(url);
        socket.onopen = () => done("opened");
        socket.onclose = event => done(event.code);
    })""", f"ws://127.0.0.1:{shared_home.http_port}/xend/console/{port}/attach")
    assert closed == 1006  # refused before the upgrade (403)
    assert console_status(shared_home, port) == "listening"


def test_a_page_of_another_site_cannot_open_the_console(
        shared_home: XendHome, page_with, other_site) -> None:  # noqa: F811
    port = start_domain(shared_home, "term4")
    page: Page = page_with(shared_home.admin_token())  # the browser has xend's credentials
    page.goto(other_site("<p>Nothing to see here</p>"))
    closed = page.evaluate("""url => new Promise(done => {
        const socket = new WebSocket(url);
        socket.onopen = () => {
            socket.send(new TextEncoder().encode("crash\\r"));
            done("opened");
        };
        socket.onclose = event => done(event.code);
    })""", f"ws://127.0.0.1:{shared_home.http_port}/xend/console/{port}/attach")
    assert closed == 1006  # xend answered 403: the Origin is not its own
    assert (f"Console {port}: refused: a request from 'http://localhost:"
            in shared_home.logfile.read_text())
    assert console_status(shared_home, port) == "listening"
    assert b"# crash" not in scrollback(shared_home, port)  # nothing was typed
    assert "term4" in shared_home.get_sxp("/xend/domain/")
