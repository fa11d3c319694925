"""xend's icon in a real Chromium: the pages name theirs and ``/favicon.ico`` answers
anyone, so the browser's own ask for an icon is no 401 on the console (the session's
cookie is for ``/xend/`` only, and the browser asks before anybody logs in)."""

from __future__ import annotations

import pytest

from tests.support.home import XendHome

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Page, Response

pytestmark = pytest.mark.e2e


def watch(page: Page) -> list[str]:
    """The console's errors and every reply of 400 or more the page's loads got."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("response", lambda reply: problems.append(f"{reply.status} {reply.url}")
            if reply.status >= 400 else None)
    return problems


def is_icon(reply: Response) -> None:
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("image/svg+xml")


def test_every_page_has_xends_icon_and_a_clean_console(shared_home: XendHome, new_page,
                                                        logged_in) -> None:
    base = shared_home.url
    page: Page = new_page()
    problems = watch(page)
    with page.expect_response(f"{base}/xend/static/favicon.svg") as icon:
        page.goto(f"{base}/xend/login")  # nobody logged in yet
    is_icon(icon.value)
    # What a browser asks of a site whose page names no icon (a reply viewed bare): anyone
    # gets it.
    bare = page.goto(f"{base}/favicon.ico")
    assert bare is not None
    is_icon(bare)
    assert bare.body().startswith(b"<svg")
    assert problems == []

    page = logged_in(base)
    problems = watch(page)
    with page.expect_response(f"{base}/xend/static/favicon.svg") as icon:
        page.goto(f"{base}/xend/node/")
    is_icon(icon.value)
    page.wait_for_load_state("networkidle")
    assert problems == []
