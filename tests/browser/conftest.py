"""A real Chromium (Debian's, never a downloaded one) driven by Playwright against real xends.

A browser reaches xend over TCP, where it must log in: the tests make real local users
with passwords (``useradd``, ``chpasswd``), one in an admin group and one in a viewer
group that the xends' configs name, and log in through the login form, checked by PAM.

Every page a test looks at can be saved as a screenshot under ``$XEND_TEST_ARTIFACTS``
(default ``test-artifacts/`` at the top of the checkout, ignored by git).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.users import User, local_group, local_user

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("XEND_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts") / "browser"


def _why_not() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


# Package scope, not session: while Playwright's sync API is open the main thread has a
# running asyncio loop, and later tests that call asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    why = _why_not()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser) -> Iterator[Callable[..., object]]:  # type: ignore[no-untyped-def]
    """A factory of pages, each in its own browser context (own cookies)."""
    contexts = []

    def make(*, javascript: bool = True, width: int = 1280, height: int = 900):  # type: ignore[no-untyped-def]
        context = browser.new_context(java_script_enabled=javascript,
                                      viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """Save the whole page as ``<test name>-<what>.png``; returns the file."""
    test = request.node.originalname

    def save(page, what: str) -> Path:  # type: ignore[no-untyped-def]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{test}-{what}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


@dataclass(frozen=True)
class Accounts:
    """The local users who log in to the xends of these tests, and their groups."""

    admin: User
    viewer: User
    admin_group: str
    viewer_group: str

    def config(self) -> str:
        """The config lines that make the groups xend's admins and viewers."""
        return (f"(xend-admin-group {self.admin_group})\n"
                f"(xend-viewer-group {self.viewer_group})\n")


@pytest.fixture(scope="package")
def accounts() -> Iterator[Accounts]:
    with (local_group("xadm") as admins, local_group("xview") as viewers,
          local_user(admins, prefix="xa") as admin, local_user(viewers, prefix="xv") as viewer):
        yield Accounts(admin, viewer, admins, viewers)


@pytest.fixture(scope="module")
def shared_xend_config(accounts: Accounts) -> str:
    return accounts.config()


def _log_in(page, base: str, user: User, password: str | None = None,  # type: ignore[no-untyped-def]
            next: str = "/xend/domain/"):
    """Fill in and send the login form as a person does; the response to the form."""
    page.goto(f"{base}/xend/login?next={next}")
    page.get_by_label("User name").fill(user.name)
    page.get_by_label("Password").fill(password if password is not None else user.password)
    with page.expect_response(re.compile(r"/xend/login$")) as sent:
        page.get_by_role("button", name="Log in").click()
    return sent.value


@pytest.fixture
def log_in() -> Callable[..., object]:
    """``log_in(page, base, user, password=user's, next="/xend/domain/")``: the login
    form filled in and sent; the response to it."""
    return _log_in


@pytest.fixture
def logged_in(new_page, accounts: Accounts) -> Callable[..., object]:  # type: ignore[no-untyped-def]
    """A factory of pages logged in to the xend at ``base``: ``logged_in(base, user=admin,
    **new_page's options)``."""

    def make(base: str, user: User | None = None, **options: object):  # type: ignore[no-untyped-def]
        page = new_page(**options)
        reply = _log_in(page, base, user or accounts.admin)
        assert reply.status == 303, reply.text()
        page.wait_for_url(f"{base}/xend/domain/")
        return page

    return make
