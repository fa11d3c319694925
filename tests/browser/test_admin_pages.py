"""The HTML admin pages in a real Chromium, against a real xend on the sim hypervisor.

What a person at the browser does, logged in as an admin (a local user the tests make;
``conftest.py``): create a domain by uploading its config, see it in the list, pause
and unpause it, read its console, destroy it; see errors beside the form that caused
them; watch lists follow the event stream; use it on a phone. And what a page
elsewhere must not be able to do: change anything.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.home import XendHome
from tests.support.ports import free_port
from tests.support.processes import wait_for
from xend_actors import sxp

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

BOOT_TEXT = "Booting simulated Linux"


def vm_config(name: str, *extra: str) -> str:
    linux = f"(linux (kernel /boot/vmlinuz-sim) (root '/dev/sda1 ro'){''.join(extra)})"
    return f"(vm (name {name}) (memory 32)\n    (image {linux}))\n"


def domain_names(home: XendHome) -> list[str]:
    return home.get_sxp("/xend/domain/")


def domain_info(home: XendHome, name: str) -> sxp.Value:
    return home.get_sxp(f"/xend/domain/{name}")


def create_paused(home: XendHome, name: str) -> sxp.Value:
    with home.http() as client:
        reply = client.post("/xend/domain/", data={"op": "create", "config": vm_config(name)})
    assert reply.status_code == 201, reply.text
    return sxp.parse(reply.text)


def post_op(home: XendHome, name: str, op: str) -> None:
    with home.http() as client:
        assert client.post(f"/xend/domain/{name}", data={"op": op}).status_code == 200


def console_shows(home: XendHome, port: str, text: str) -> bool:
    """Whether the console's scrollback holds ``text``, waiting a little for output."""
    with home.http() as client:
        reply = client.get(f"/xend/console/{port}/log", params={"since": 0, "wait": 2})
    return text.encode() in reply.content


def test_a_domain_from_upload_to_destroy_without_javascript(
        shared_home: XendHome, logged_in, screenshot, tmp_path: Path) -> None:
    base = shared_home.url
    page: Page = logged_in(base, javascript=False)
    page.goto(f"{base}/xend/domain/")
    expect(page.locator("tr[data-domain='Domain-0']")).to_be_visible()
    screenshot(page, "domains-before")

    config = tmp_path / "web1.sxp"
    config.write_text(vm_config("web1"))
    page.locator("#form-create input[type=file]").set_input_files(config)
    page.get_by_role("button", name="Create domain").click()
    expect(page).to_have_url(re.compile(r"/xend/domain/web1\?done=create"))
    expect(page.get_by_role("status")).to_have_text("create: done.")
    assert "web1" in domain_names(shared_home)
    screenshot(page, "domain-created")

    page.get_by_role("link", name="Domains", exact=True).click()
    row = page.locator("tr[data-domain='web1']")
    expect(row.locator("td.state")).to_have_text("paused")
    expect(row.locator("td[data-label=Memory]")).to_have_text("32 MB")
    port = sxp.child_value(sxp.child(domain_info(shared_home, "web1"), "console"),
                           "console_port")
    expect(row.get_by_role("link", name=port)).to_have_attribute("href",
                                                                 f"/xend/console/{port}/")

    row.get_by_role("button", name="Unpause").click()
    expect(row.locator("td.state")).not_to_contain_text("paused")
    assert "p" not in sxp.child_value(domain_info(shared_home, "web1"), "state")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator("td.state")).to_have_text("paused")
    assert "p" in sxp.child_value(domain_info(shared_home, "web1"), "state")
    screenshot(page, "domains-paused")
    row.get_by_role("button", name="Unpause").click()
    expect(row.locator("td.state")).not_to_contain_text("paused")

    wait_for(lambda: console_shows(shared_home, port, BOOT_TEXT), 20, "the guest to boot")
    page.get_by_role("link", name="web1").click()
    expect(page.get_by_label("Console scrollback")).to_contain_text(BOOT_TEXT)
    expect(page.locator("pre.sxp").last).to_contain_text("(kernel /boot/vmlinuz-sim)")
    screenshot(page, "domain")
    page.get_by_role("link", name=f"Console on port {port}").click()
    expect(page.get_by_role("heading", name=f"Console on port {port}")).to_be_visible()
    expect(page.get_by_label("Console scrollback")).to_contain_text(BOOT_TEXT)
    screenshot(page, "console")

    page.goto(f"{base}/xend/domain/web1")
    page.get_by_role("button", name="Destroy").click()
    expect(page).to_have_url(re.compile(r"/xend/domain/\?done=destroy(#.*)?$"))
    expect(page.locator("tr[data-domain='web1']")).to_have_count(0)
    assert "web1" not in domain_names(shared_home)
    screenshot(page, "domains-after")


def test_a_malformed_config_shows_its_error_beside_the_form_and_keeps_the_text(
        shared_home: XendHome, logged_in, screenshot, tmp_path: Path) -> None:
    page: Page = logged_in(shared_home.url)
    page.goto(f"{shared_home.url}/xend/domain/")
    create = page.locator("#form-create")
    bad = tmp_path / "broken.sxp"
    bad.write_text("(vm (name broken) (memory 32)")
    create.locator("input[type=file]").set_input_files(bad)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        create.get_by_role("button", name="Create domain").click()
    assert posted.value.status == 400
    expect(create.get_by_role("alert")).to_contain_text("line 1, column 30")
    expect(create.locator("textarea")).to_have_value("(vm (name broken) (memory 32)")
    screenshot(page, "upload-error")

    # The kept text is fixed in place and sent again (no file this time).
    create.locator("textarea").fill(vm_config("9lives"))
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        create.get_by_role("button", name="Create domain").click()
    assert posted.value.status == 400
    expect(create.get_by_role("alert")).to_contain_text("invalid vm name")
    expect(create.locator("textarea")).to_have_value(re.compile(r"\(name 9lives\)"))
    assert domain_names(shared_home) == ["Domain-0"]


def test_op_errors_from_xend_show_beside_their_form(shared_home: XendHome, logged_in,
                                                    screenshot) -> None:
    create_paused(shared_home, "web1")
    page: Page = logged_in(shared_home.url)
    page.goto(f"{shared_home.url}/xend/domain/web1")

    device = page.locator("#form-device_create")
    device.locator("textarea").fill("(vbd (dev sda2")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        device.get_by_role("button", name="Add device").click()
    assert posted.value.status >= 400
    expect(page.locator("#form-device_create").get_by_role("alert")).not_to_be_empty()
    expect(page.locator("#form-device_create textarea")).to_have_value("(vbd (dev sda2")

    migrate = page.locator("#form-migrate")
    migrate.get_by_label("to host").fill("127.0.0.1:1")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        migrate.get_by_role("button", name="Migrate").click()
    assert posted.value.status >= 400
    expect(page.locator("#form-migrate").get_by_role("alert")).not_to_be_empty()
    expect(page.get_by_role("alert")).to_have_count(1)  # only beside the form that failed
    expect(page.locator("#form-migrate").get_by_label("to host")).to_have_value("127.0.0.1:1")
    screenshot(page, "migrate-error")
    assert "web1" in domain_names(shared_home)


@pytest.fixture
def other_site() -> Iterator[Callable[..., str]]:
    """A real web server elsewhere: give it a page, get its URL. By default it is another
    site (another host name and port); ``host="127.0.0.1"`` makes it the same site as
    xend (another port of the same host: another origin, but the same site).

    A real one, not a mocked route, so the browser treats it as the loopback site it is
    and lets its requests reach xend, where xend itself must refuse them.
    """
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str, host: str = "localhost") -> str:
        path = f"/page{len(pages)}.html"
        pages[path] = html.encode()
        return f"http://{host}:{server.server_address[1]}{path}"

    yield serve
    server.shutdown()
    server.server_close()


def test_a_form_post_from_elsewhere_is_refused_and_changes_nothing(
        shared_home: XendHome, logged_in, screenshot, other_site) -> None:
    base = shared_home.url
    target = f"{base}/xend/domain/web1"
    create_paused(shared_home, "web1")
    before = sxp.child_value(domain_info(shared_home, "web1"), "state")
    # The victim is logged in to xend, so the browser holds xend's cookies; the
    # attacker even knows a valid form token.
    page: Page = logged_in(base)
    page.goto(target)
    token = page.locator("#form-destroy input[name=csrf_token]").input_value()
    prize = f"""<form method="post" action="{target}">
          <input type="hidden" name="op" value="destroy">
          <input type="hidden" name="reason" value="halt">
          <input type="hidden" name="csrf_token" value="{token}">
          <button>Claim your prize</button>
        </form>"""

    # From another port of the same host (the same site), the browser sends the
    # session cookie along; the form check refuses the form.
    page.goto(other_site(prize, host="127.0.0.1"))
    with page.expect_response(target) as posted:
        page.get_by_role("button", name="Claim your prize").click()
    assert posted.value.status == 403
    expect(page.get_by_role("heading", name="Refused")).to_be_visible()
    screenshot(page, "refused")

    # From another site, the browser does not even send the session (SameSite=Strict):
    # to xend the request comes from nobody, whether a script there passes for a
    # program by asking for SXP (401) or a form is sent (to the login page).
    page.goto(other_site("<p>Nothing to see here</p>"))
    with page.expect_response(target) as posted:
        page.evaluate("""url => fetch(url, {method: "POST", mode: "no-cors",
            headers: {Accept: "application/sxp"},
            body: new URLSearchParams({op: "destroy", reason: "halt"})})""", target)
    assert posted.value.status == 401
    page.goto(other_site(prize))
    with page.expect_response(target) as posted:
        page.get_by_role("button", name="Claim your prize").click()
    assert posted.value.status == 303  # to the login page; the form is not run
    expect(page.locator("input[name=password]")).to_be_visible()
    assert "web1" in domain_names(shared_home)
    assert sxp.child_value(domain_info(shared_home, "web1"), "state") == before


def test_lists_follow_the_event_stream(shared_home: XendHome, logged_in, screenshot) -> None:
    base = shared_home.url
    domains: Page = logged_in(base)
    domains.goto(f"{base}/xend/domain/")
    events: Page = logged_in(base)
    events.goto(f"{base}/xend/event/")
    expect(events.locator("#event-list tbody tr").first).to_contain_text("xend.")

    info = create_paused(shared_home, "web2")
    domid = sxp.child_value(info, "id")
    row = domains.locator("tr[data-domain='web2']")
    expect(row.locator("td.state")).to_have_text("paused")
    post_op(shared_home, "web2", "unpause")
    expect(row.locator("td.state")).not_to_contain_text("paused")
    screenshot(domains, "domains-live")

    rows = events.locator("#event-list tbody tr")
    expect(rows.filter(has_text="xend.domain.unpause").first).to_contain_text(
        f"(web2 {domid})")
    expect(rows.filter(has_text="xend.audit").first).to_contain_text("(op unpause)")
    created = re.compile(r"xend\.domain\.create(?!\.)")  # not its progress events
    expect(events.locator("#event-list tbody tr", has_text=created)
           .filter(has_text="web2")).to_have_count(1)
    screenshot(events, "events-live")


def test_values_are_shown_as_text_never_run(shared_home: XendHome, logged_in) -> None:
    with shared_home.http() as client:
        reply = client.post("/xend/domain/", data={"op": "create", "config": vm_config(
            "web3", " (args '<script>alert(1)</script><img src=x onerror=alert(2)>')")})
    assert reply.status_code == 201, reply.text
    page: Page = logged_in(shared_home.url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{shared_home.url}/xend/domain/web3")
    expect(page.locator("pre.sxp").last).to_contain_text("<script>alert(1)</script>")
    assert page.locator("main script, main img").count() == 0
    assert dialogs == []


@pytest.mark.parametrize(("path", "heading", "shows"), [
    ("/xend/", None, "domain"),
    ("/xend/node/", "Node", "xend version"),
    ("/xend/domain/", "Domains", "Domain-0"),
    ("/xend/domain/web1", "Domain web1", "Configuration"),
    ("/xend/console/", "Consoles", "web1"),
    ("/xend/event/", "Events", "xend.domain.create"),
    ("/xend/vnet/", None, "Vnets"),
    ("/xend/node/log", "xend log", "Serving HTTP"),
    ("/xend/node/dmesg", "Hypervisor console (dmesg)", None),
])
def test_every_page_at_desktop_and_phone_width(shared_home: XendHome, logged_in, screenshot,
                                               path: str, heading: str | None,
                                               shows: str | None) -> None:
    create_paused(shared_home, "web1")
    for width, height in ((1280, 900), (390, 844)):
        page: Page = logged_in(shared_home.url, width=width, height=height)
        reply = page.goto(f"{shared_home.url}{path}")
        assert reply is not None and reply.status == 200
        if heading:
            expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        if shows:
            expect(page.locator("main")).to_contain_text(shows)
        # Nothing sticks out sideways: no page-wide horizontal scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        what = re.sub(r"[^a-z0-9]+", "-", path.strip("/")) or "root"
        screenshot(page, f"{what}-{width}px")
