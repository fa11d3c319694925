"""Who is asking: a program (SXP replies) or a browser (HTML pages).

The original rule (facts §4.1): SXP when the request has no ``User-Agent``, or no
``Accept``, or an ``Accept`` naming ``application/sxp``; HTML otherwise.
"""

from __future__ import annotations

from werkzeug import Request

SXP_MIMETYPE = "application/sxp"


def wants_html(request: Request) -> bool:
    environ = request.environ  # its headers as they are, without werkzeug's view of them
    accept = environ.get("HTTP_ACCEPT")
    if not environ.get("HTTP_USER_AGENT") or not accept:
        return False
    return SXP_MIMETYPE not in accept
