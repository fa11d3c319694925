"""The samples API's windows (issue 17, the graphs): ``last=N`` bounds a history to the
latest N samples xend took, on a domain's route and in the whole host's ``history=1``,
which also takes ``since=SEQ`` (the list page's sparklines ask for what is new, for every
domain in one request); ``domain=NAME`` keeps one domain, on the GET and the stream (a
domain's page follows only its own); bad numbers are 400s. The pages carry the graphs
only while xend samples. A real xend + simhv sampling every half second (and one that does not).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.processes import wait_for
from tests.support.xend import Xend
from xend_actors import sxp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_xend_config() -> str:
    return "(sample-interval 0.5)\n(sample-history 30)\n"


def series(history: sxp.Value, name: str) -> list[str]:
    return sxp.child(history, name)[1:]


def domain_in(sample: sxp.Value, name: str) -> sxp.Value:
    return next(d for d in sxp.children(sample, "domain") if sxp.child_value(d, "name") == name)


def test_last_and_since_bound_a_history(xend: Xend) -> None:
    xend.start_sim("win1")
    wait_for(lambda: len(series(xend.get_sxp("/xend/domain/win1/samples"), "time")) > 6,
             what="seven samples of win1")

    recent = xend.get_sxp("/xend/domain/win1/samples", last=3)
    times = series(recent, "time")
    assert 1 <= len(times) <= 3  # 3, or fewer if a sample came between the two reads
    assert all(len(series(recent, name)) == len(times) for name in ("cpu", "memory", "vif_tx"))
    whole = xend.get_sxp("/xend/domain/win1/samples")
    assert times == series(whole, "time")[-len(times):]
    assert series(xend.get_sxp("/xend/domain/win1/samples", last=0), "time") == []

    # The whole host: each domain's history, the last N, or what came after a seq.
    host = xend.get_sxp("/xend/samples/", history="1", last=2)
    seq = int(sxp.child_value(host, "seq"))
    for name in ("win1", "Domain-0"):
        history = sxp.child(domain_in(host, name), "history")
        # A sample taken between the reply's two reads is in the history too.
        ahead = int(sxp.child_value(history, "seq")) - seq
        assert ahead in (0, 1)
        assert len(series(history, "time")) == 2 + ahead
    wait_for(lambda: int(sxp.child_value(xend.get_sxp("/xend/samples/"), "seq")) > seq + 1,
             what="two more samples")
    newer = xend.get_sxp("/xend/samples/", history="1", since=seq, last=60)
    history = sxp.child(domain_in(newer, "win1"), "history")
    added = series(history, "time")
    assert len(added) == int(sxp.child_value(history, "seq")) - seq >= 2
    assert min(float(t) for t in added) > max(float(t) for t in series(
        sxp.child(domain_in(host, "win1"), "history"), "time"))

    # One domain's samples: the latest, and on the stream.
    one = xend.get_sxp("/xend/samples/", domain="win1", history="1", last=2)
    assert [sxp.child_value(d, "name") for d in sxp.children(one, "domain")] == ["win1"]
    assert len(series(sxp.child(domain_in(one, "win1"), "history"), "time")) >= 2
    assert sxp.children(xend.get_sxp("/xend/samples/", domain="nosuch"), "domain") == []
    with xend.http.stream("GET", "/xend/samples/", params={"domain": "win1"},
                          headers={"Accept": "text/event-stream"}) as reply:
        data = next(line for line in reply.iter_lines() if line.startswith("data: "))
    streamed = sxp.parse(data.removeprefix("data: "))
    assert [sxp.child_value(d, "name") for d in sxp.children(streamed, "domain")] == ["win1"]

    for params in ({"last": "-1"}, {"last": "x"}, {"since": "1.5"}):
        reply = xend.get("/xend/domain/win1/samples", **params)
        assert reply.status_code == 400, reply.text
        assert "last" in reply.text or "since" in reply.text
    assert xend.get("/xend/samples/", history="1", last="x").status_code == 400


def page(xend: Xend, path: str) -> str:
    """The HTML page a browser gets at ``path`` (as root on the Unix socket: an admin)."""
    reply = xend.http.get(path, headers={"Accept": "text/html", "User-Agent": "test"})
    assert reply.status_code == 200, reply.text
    return reply.text


def test_the_pages_graph_only_while_xend_samples(xend: Xend,
                                                 fresh_xend: Callable[..., Xend]) -> None:
    xend.start_sim("win2")
    wait_for(lambda: len(series(xend.get_sxp("/xend/domain/win2/samples"), "cpu")) > 2,
             what="win2's rates")
    domain, domains = page(xend, "/xend/domain/win2"), page(xend, "/xend/domain/")
    for html in (domain, domains):
        assert '<script src="/xend/static/graphs.js" defer>' in html
        assert '<script src="/xend/static/uPlot.iife.min.js" defer>' in html
    assert 'id="domain-graphs"' in domain and 'id="domain-samples"' in domain
    assert 'data-spark="win2"' in domains

    quiet = fresh_xend("(sample-interval 0)\n")
    quiet.start_sim("win3")
    domain, domains = page(quiet, "/xend/domain/win3"), page(quiet, "/xend/domain/")
    for html in (domain, domains):
        assert "graphs.js" not in html and "uPlot" not in html
    assert "Activity" not in domain and "data-spark" not in domains
