"""The graphs (issue 17) in a real Chromium, against a real xend on the sim hypervisor that
samples every half second: a domain's page draws its CPU, memory, disk and network and
follows the samples' stream, which it lets go while hidden and catches up on after; the
list draws a CPU line per domain from one request for the whole host and the stream,
kept when the list follows the event stream; a viewer sees them as an admin does;
without JavaScript the same samples are a table. Screenshots at desktop and phone width.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser.conftest import Accounts
from tests.support.processes import wait_for
from tests.support.xend import Xend
from xend_actors import sxp

pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
from playwright.sync_api import Page, Request, expect

pytestmark = pytest.mark.e2e

INTERVAL = 0.5
MIB = 1024 * 1024
PERCENT = re.compile(r"^\d+\.\d %$")
SERIES_COLOUR = (0x1F, 0x5F, 0xA8)  # --graph-1 in xend.css: the first line of each graph


@pytest.fixture(scope="module")
def shared_xend_config(accounts: Accounts) -> str:
    return accounts.config() + f"(sample-interval {INTERVAL})\n(sample-history 60)\n"


@pytest.fixture
def vbd_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("disk") / "disk.img"
    path.write_bytes(bytes(1 << 20))
    yield str(path)


def sampled(xend: Xend, name: str, count: int) -> None:
    """Wait until xend has ``count`` samples of domain ``name``."""
    wait_for(lambda: len(sxp.child(xend.get_sxp(f"/xend/domain/{name}/samples"), "time"))
             > count, what=f"{count} samples of {name}")


def sampled_after(xend: Xend, name: str, time: float) -> None:
    """Wait until xend has a sample of domain ``name`` taken after ``time``."""
    wait_for(lambda: any(float(t) > time for t in sxp.child(
        xend.get_sxp(f"/xend/domain/{name}/samples", last=1), "time")[1:]),
        what=f"a sample of {name} after {time}")


def set_hidden(page: Page, hidden: bool) -> None:
    """Make the page's document hidden or visible to its scripts, as a tab put in the
    background is, and tell them."""
    page.evaluate("""(hidden) => {
        Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


def watch_problems(page: Page) -> list[str]:
    """What the page's scripts report going wrong (a CSP refusal says so on the console)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    return problems


def chart_points(page: Page, chart: str, series: int = 1) -> int:
    """How many values the page's ``chart`` has in its ``series``, gaps not counted."""
    return page.evaluate("""([chart, series]) => {
        const made = window.xendGraphs && window.xendGraphs.charts[chart];
        return made ? made.data[series].filter((v) => v !== null).length : 0;
    }""", [chart, series])


def drawn_in(page: Page, selector: str) -> int:
    """Pixels of the graphs' first colour on the canvas at ``selector``: the line drawn
    (its fill beneath is fainter: not counted)."""
    return page.evaluate("""([selector, [r, g, b]]) => {
        const canvas = document.querySelector(selector);
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width,
                                                            canvas.height).data;
        let found = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            if (pixels[i + 3] > 64 && Math.abs(pixels[i] - r) < 24
                && Math.abs(pixels[i + 1] - g) < 24 && Math.abs(pixels[i + 2] - b) < 24) {
                found++;
            }
        }
        return found;
    }""", [selector, list(SERIES_COLOUR)])


def test_a_domains_page_graphs_its_samples_and_follows_new_ones(
        xend: Xend, logged_in, screenshot, vbd_file: str) -> None:
    xend.start_sim("graph1", ["vbd", ["uname", f"file:{vbd_file}"], ["dev", "sda1"],
                              ["mode", "w"]])
    sampled(xend, "graph1", 3)
    base = xend.home.url
    page: Page = logged_in(base)
    problems = watch_problems(page)
    page.goto(f"{base}/xend/domain/graph1")

    graphs = page.locator("#domain-graphs")
    expect(graphs.locator("figure.graph canvas")).to_have_count(4)
    expect(graphs.locator("figcaption")).to_have_text(["CPU", "Memory", "Disk", "Network"])
    expect(page.locator("#domain-samples")).to_be_hidden()  # the charts replace the table
    wait_for(lambda: chart_points(page, "cpu") >= 3, what="three cpu points drawn")
    memory = page.evaluate("window.xendGraphs.charts.memory.data[1].at(-1)")
    assert memory == pytest.approx(32 * MIB, rel=1e-3)  # the ring keeps three digits
    cpu = page.evaluate("window.xendGraphs.charts.cpu.data[1].filter((v) => v !== null)")
    assert all(0 <= share < 1 for share in cpu) and any(share > 0 for share in cpu)
    wait_for(lambda: drawn_in(page, "#domain-graphs figure.graph canvas") > 50,
             what="the cpu line on its canvas")

    # New samples come in on the stream while the page is open, the guest's disk writes
    # among them.
    before = chart_points(page, "cpu")
    wait_for(lambda: chart_points(page, "cpu") > before + 2, what="new samples on the page")
    xend.sh("graph1", "disk 0x801 write 0 hello", "wrote 5 bytes")
    wait_for(lambda: page.evaluate(
        "window.xendGraphs.charts.disk.data[2].some((v) => v > 0)"), what="the write graphed")
    screenshot(page, "domain-graphs-1280px")

    # Hidden, the page lets its stream go; in view again, it asks for what it missed.
    with page.expect_event("requestfailed", lambda r: r.resource_type == "eventsource") as \
            stream:
        set_hidden(page, True)
    assert stream.value.url == f"{base}/xend/samples/?domain=graph1"  # its own samples only
    drawn = page.evaluate("window.xendGraphs.charts.cpu.data[0].at(-1)")
    sampled_after(xend, "graph1", drawn + 4 * INTERVAL)
    with page.expect_request(lambda r: "/xend/domain/graph1/samples?since=" in r.url):
        set_hidden(page, False)
    wait_for(lambda: page.evaluate("window.xendGraphs.charts.cpu.data[0].at(-1)")
             > drawn + 4 * INTERVAL, what="the samples taken while hidden")
    # Every sample xend took over that time is drawn, and drawn once.
    drawn_times = page.evaluate("window.xendGraphs.charts.cpu.data[0]")
    taken = [float(t) for t in sxp.child(xend.get_sxp("/xend/domain/graph1/samples"),
                                         "time")[1:]]
    assert drawn_times == [t for t in taken if drawn_times[0] <= t <= drawn_times[-1]]

    phone: Page = logged_in(base, width=390, height=844)
    phone.goto(f"{base}/xend/domain/graph1")
    wait_for(lambda: chart_points(phone, "network", 2) >= 3, what="the phone's graphs")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    widths = phone.locator("#domain-graphs canvas").evaluate_all(
        "(all) => all.map((c) => c.getBoundingClientRect().right)")
    assert widths and max(widths) <= 390
    screenshot(phone, "domain-graphs-390px")
    assert problems == []


def test_the_list_draws_a_cpu_line_per_domain_from_one_request(
        xend: Xend, new_page, log_in, accounts: Accounts, logged_in, screenshot) -> None:
    for name in ("spark1", "spark2"):
        xend.start_sim(name)
    sampled(xend, "spark2", 3)
    base = xend.home.url
    page: Page = new_page()
    assert log_in(page, base, accounts.admin, next="/xend/node/").status == 303
    page.wait_for_url(f"{base}/xend/node/")  # a page without graphs: no samples asked yet
    problems = watch_problems(page)
    asked: list[Request] = []
    page.on("request", lambda request: asked.append(request))
    page.goto(f"{base}/xend/domain/")

    def points(name: str) -> int:
        return page.evaluate("""(name) => {
            const line = window.xendGraphs && window.xendGraphs.sparks.get(name);
            return line ? line.columns.cpu.filter((v) => v !== null).length : 0;
        }""", name)

    for name in ("spark1", "spark2", "Domain-0"):
        cell = page.locator(f"tr[data-domain='{name}'] td.cpu")
        expect(cell.locator("canvas")).to_have_count(1)
        expect(cell.locator(".spark-value")).to_have_text(PERCENT)
        wait_for(lambda name=name: points(name) >= 3, what=f"{name}'s cpu line")
    wait_for(lambda: drawn_in(page, "tr[data-domain='spark1'] td.cpu canvas") > 10,
             what="spark1's line on its canvas")

    # An event makes live.js swap the list's rows: the lines move into the new rows and
    # keep growing.
    before = points("spark2")
    xend.op("spark2", "pause")
    expect(page.locator("tr[data-domain='spark2'] td.state")).to_have_text("paused")
    expect(page.locator("tr[data-domain='spark2'] td.cpu canvas")).to_have_count(1)
    wait_for(lambda: points("spark2") > before + 2, what="spark2's line after the swap")
    screenshot(page, "domain-list-sparks-1280px")

    # The whole host in one request, then its stream: never a request a domain.
    samples = [(request.resource_type, request.url.removeprefix(base)) for request in asked
               if "/samples" in request.url]
    assert ("eventsource", "/xend/samples/") in samples
    assert [url for kind, url in samples if kind != "eventsource"] == [
        "/xend/samples/?history=1&last=60&since=-1"]

    phone: Page = logged_in(base, width=390, height=844)
    phone.goto(f"{base}/xend/domain/")
    expect(phone.locator("tr[data-domain='spark1'] td.cpu canvas")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone, "domain-list-sparks-390px")
    assert problems == []


def test_without_javascript_the_samples_are_a_table(xend: Xend, logged_in,
                                                    screenshot) -> None:
    xend.start_sim("table1")
    sampled(xend, "table1", 14)
    base = xend.home.url
    page: Page = logged_in(base, javascript=False)
    page.goto(f"{base}/xend/domain/table1")
    expect(page.locator("#domain-graphs")).to_be_hidden()
    rows = page.locator("#domain-samples tbody tr")
    expect(rows).to_have_count(12)  # bounded: the last minute at 5 s, whatever is kept
    for row in rows.all():
        expect(row.locator("td[data-label=CPU]")).to_have_text(PERCENT)
        expect(row.locator("td[data-label=Memory]")).to_have_text("32.0 MiB")
        expect(row.locator("td[data-label='Disk write']")).to_have_text("0 B/s")
    times = rows.locator("td[data-label=Time]").all_inner_texts()
    assert times == sorted(times, reverse=True)  # newest first
    screenshot(page, "domain-table-1280px")

    page.goto(f"{base}/xend/domain/")
    expect(page.locator("tr[data-domain='table1'] td.cpu")).to_have_text(PERCENT)
    screenshot(page, "domain-list-nojs-1280px")


def test_a_viewer_sees_the_graphs_too(xend: Xend, logged_in, accounts: Accounts) -> None:
    xend.start_sim("seen1")
    sampled(xend, "seen1", 3)
    page: Page = logged_in(xend.home.url, user=accounts.viewer)
    problems = watch_problems(page)
    page.goto(f"{xend.home.url}/xend/domain/seen1")
    expect(page.locator("#domain-graphs figure.graph canvas")).to_have_count(4)
    before = chart_points(page, "cpu")
    wait_for(lambda: chart_points(page, "cpu") > before + 1, what="the viewer's live graph")
    assert page.locator("form.op").count() == 0  # still no forms for a viewer
    assert problems == []
