"""The pool page in a real Chromium (issue 18): a viewer logged in to a pool member
finds "Pool" in the navigation, and on it every host with its state and every domain
with its host; a domain of this member's leads to its own page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import Accounts
from tests.support.etcd import EtcdCluster
from tests.support.home import XendHome
from tests.support.processes import wait_for
from xend_actors import sxp

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

POOL = "pages"
CONFIG = "(vm (name {}) (memory 32) (image (linux (kernel /boot/vmlinuz-sim))))"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(1)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def shared_xend_config(accounts: Accounts, etcd: EtcdCluster) -> str:
    return (accounts.config() + f"(xend-pool {POOL})\n(xend-pool-etcd '{etcd.urls}')\n"
            "(xend-pool-host p1)\n(xend-pool-ttl 2)\n")


def test_a_viewer_finds_the_pool_page_with_hosts_and_domains(
        shared_home: XendHome, etcd: EtcdCluster, accounts: Accounts, logged_in,
        screenshot) -> None:
    with shared_home.http() as client:
        created = client.post("/xend/domain/", data={"op": "create",
                                                    "config": CONFIG.format("web1")})
        assert created.status_code == 201, created.text
    # A claim of a member that is gone (no entry under a lease): a host down.
    etcd.put(f"/xend-pool/{POOL}/names/old1", "p2")
    wait_for(lambda: "(id " in sxp.show(shared_home.get_sxp("/xend/pool/")), 10,
             "web1's summary in the pool")

    page: Page = logged_in(shared_home.url, accounts.viewer)
    page.get_by_role("navigation").get_by_role("link", name="Pool").click()
    page.wait_for_url(f"{shared_home.url}/xend/pool/")
    expect(page.get_by_role("heading", name=f"Pool {POOL}: hosts")).to_be_visible()
    expect(page.locator('tr[data-host="p1"] td.state')).to_have_text("up")
    expect(page.locator('tr[data-host="p2"] td.state')).to_have_text("down")
    expect(page.locator('tr[data-domain="web1"] td[data-label="Host"]')).to_have_text("p1")
    expect(page.locator('tr[data-domain="web1"] td.state')).to_have_text("paused")
    expect(page.locator('tr[data-domain="old1"] td[data-label="Host"]')).to_have_text("p2")
    expect(page.locator('tr[data-domain="old1"] td.state')).to_have_text("not yet known")
    screenshot(page, "pool")
    page.get_by_role("link", name="web1").click()
    page.wait_for_url(f"{shared_home.url}/xend/domain/web1")
