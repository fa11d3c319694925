"""Who is asking: a program (SXP replies) or a browser (HTML pages).

The original rule (facts §4.1): SXP when the request has no ``User-Agent``, or no
``Accept``, or an ``Accept`` naming ``application/sxp``; HTML otherwise.
"""

from __future__ import annotations

from werkzeug import Request

SXP_MIMETYPE = "application/sxp"


def wants_html(request: Request) -> bool:
    accept = request.headers.get("Accept")
    if not request.headers.get("User-Agent") or not accept:
        return False
    return SXP_MIMETYPE not in accept
