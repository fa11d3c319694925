"""Which format each client gets: SXP unless it asks for JSON, HTML only for a browser."""

from __future__ import annotations

import pytest

from xend_actors.web.negotiate import Format, wanted

CHROME = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
          "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(("accept", "agent", "wants"), [
    (None, None, Format.SXP),  # the original xm (Python 2's httplib)
    (None, "Python-urllib/2.7", Format.SXP),
    ("application/sxp", "xm", Format.SXP),  # today's xm and XendClient
    ("*/*", "curl/8.5.0", Format.SXP),
    ("", "curl/8.5.0", Format.SXP),
    ("text/event-stream", "Mozilla/5.0", Format.SXP),  # the pages' event stream (a stream)
    ("application/json", "curl/8.5.0", Format.JSON),
    ("application/json", None, Format.JSON),
    ("application/json, */*;q=0.5", "python-httpx", Format.JSON),
    ("APPLICATION/JSON", "curl/8.5.0", Format.JSON),
    ("application/json;q=0, */*", "curl/8.5.0", Format.SXP),
    (CHROME, "Mozilla/5.0", Format.HTML),
    (FIREFOX, "Mozilla/5.0", Format.HTML),
    ("text/html", "Mozilla/5.0", Format.HTML),
    ("text/html", None, Format.SXP),  # no User-Agent: a program (facts §4.1)
    ("text/html, application/sxp", "Mozilla/5.0", Format.SXP),  # names SXP: the original
    ("text/html, application/json", "Mozilla/5.0", Format.JSON),  # a tie: the program's
    ("text/html, application/json;q=0.5", "Mozilla/5.0", Format.HTML),
    ("text/plain;q=0.1, text/html", "Mozilla/5.0", Format.HTML),
    ("text/*", "Mozilla/5.0", Format.SXP),  # does not name text/html
    ("application/xml", "Mozilla/5.0", Format.SXP),  # nothing it names: SXP, never a 406
])
def test_the_format_each_client_gets(accept: str | None, agent: str | None,
                                     wants: Format) -> None:
    environ = {**({"HTTP_ACCEPT": accept} if accept is not None else {}),
               **({"HTTP_USER_AGENT": agent} if agent is not None else {})}
    assert wanted(environ) is wants


def test_a_long_accept_is_chosen_for_without_being_kept() -> None:
    accept = "application/json, " + ", ".join(f"x/y{i};q=0.1" for i in range(100))
    assert wanted({"HTTP_ACCEPT": accept, "HTTP_USER_AGENT": "curl"}) is Format.JSON
