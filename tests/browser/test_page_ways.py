"""The ways between pages in a real Chromium (issue 17): a saved domain restored from
the Restore form of the domain list, ``/`` leading to ``/xend/`` (through the login when
the browser has no session), and an error page's Back link."""

from __future__ import annotations

import re

import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from xend_actors import sxp

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

CONFIG = "(vm (name {}) (memory 32) (image (linux (kernel /boot/vmlinuz-sim))))"


def names(home: XendHome) -> list[str]:
    return home.get_sxp("/xend/domain/")  # type: ignore[return-value]


def running(home: XendHome, name: str) -> None:
    with home.http() as client:
        created = client.post("/xend/domain/", data={"op": "create",
                                                    "config": CONFIG.format(name)})
        assert created.status_code == 201, created.text
        assert client.post(f"/xend/domain/{name}", data={"op": "unpause"}).status_code == 200


def test_a_saved_domain_is_restored_from_the_restore_form(
        shared_home: XendHome, logged_in, screenshot) -> None:
    running(shared_home, "r1")
    image = shared_home.root / "r1.save"
    with shared_home.http() as client:
        saved = client.post("/xend/domain/r1", data={"op": "save", "file": str(image)})
    assert saved.status_code == 200, saved.text
    wait_for(lambda: "r1" not in names(shared_home), 30, "the saved domain to go")

    page: Page = logged_in(shared_home.url)
    restore = page.locator("#form-restore")
    expect(restore.get_by_role("heading")).to_have_count(0)  # the section's, not the form's
    expect(page.get_by_role("heading", name="Restore a domain")).to_be_visible()

    # A file that is no save image: the message beside the form, the path kept.
    restore.get_by_label("Saved file on the host").fill(str(shared_home.config_file))
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        restore.get_by_role("button", name="Restore domain").click()
    assert posted.value.status == 400
    expect(page.locator("#form-restore").get_by_role("alert")).to_contain_text(
        "not a xend-actors save file")
    expect(page.locator("#form-restore").get_by_label("Saved file on the host")).to_have_value(
        str(shared_home.config_file))
    screenshot(page, "restore-error")

    page.locator("#form-restore").get_by_label("Saved file on the host").fill(str(image))
    page.locator("#form-restore").get_by_role("button", name="Restore domain").click()
    expect(page).to_have_url(re.compile(r"/xend/domain/r1\?done=restore"))
    expect(page.get_by_role("status")).to_have_text("restore: done.")
    expect(page.get_by_label("Console scrollback")).to_contain_text(
        "Restored from a saved state")  # the same guest, going on
    screenshot(page, "restored")
    info = shared_home.get_sxp("/xend/domain/r1")
    assert "p" not in str(sxp.child_value(info, "state"))  # it goes on where it stopped


def test_the_root_leads_to_xend_through_the_login(shared_home: XendHome, new_page,
                                                  logged_in) -> None:
    base = shared_home.url
    stranger: Page = new_page()
    stranger.goto(f"{base}/")
    expect(stranger).to_have_url(re.compile(r"/xend/login\?next="))
    expect(stranger.get_by_role("button", name="Log in")).to_be_visible()

    page: Page = logged_in(base)
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/xend/")
    page.get_by_role("link", name="/", exact=True).first.click()  # the breadcrumb's root
    expect(page).to_have_url(f"{base}/xend/")


def test_an_error_page_links_back_to_where_the_browser_came_from(
        shared_home: XendHome, logged_in, screenshot) -> None:
    base = shared_home.url
    running(shared_home, "gone1")
    page: Page = logged_in(base, javascript=False)  # the list stays as it was loaded
    page.goto(f"{base}/xend/domain/")
    link = page.locator("tr[data-domain='gone1']").get_by_role("link", name="gone1")
    with shared_home.http() as client:
        client.post("/xend/domain/gone1", data={"op": "destroy", "reason": "halt"})
    wait_for(lambda: "gone1" not in names(shared_home), 30, "the domain to go")

    link.click()
    expect(page.get_by_role("heading", name="Not available")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("invalid domain:gone1")
    screenshot(page, "error")
    page.get_by_role("link", name="Back", exact=True).click()
    expect(page).to_have_url(f"{base}/xend/domain/")

    page.goto(f"{base}/xend/domain/nosuch")  # typed: no page of this xend before it
    page.get_by_role("link", name="Back", exact=True).click()
    expect(page).to_have_url(f"{base}/xend/")
