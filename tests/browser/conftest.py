"""A real Chromium (Debian's, never a downloaded one) driven by Playwright against real xends.

Every page a test looks at can be saved as a screenshot under ``$XEND_TEST_ARTIFACTS``
(default ``test-artifacts/`` at the top of the checkout, ignored by git).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
