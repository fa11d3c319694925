"""Whether a request may change anything: cross-site requests and the browser CSRF token.

Two rules, both checked before any op runs:

- **No cross-site ops, for anyone.** A request whose ``Origin`` is not xend's own, or
  that the browser marks ``Sec-Fetch-Site: cross-site`` or ``same-site`` (another port of
  the same host is another origin but the same site), is refused. A page elsewhere can
  set ``Accept: application/sxp`` on a fetch and so pass for a program; these headers it
  cannot forge. Programs (XendClient, xm, curl) send neither header, so they are unaffected.
- **Browser forms carry a token.** A state-changing request negotiated as a browser must
  be a POST whose ``Origin`` (or, lacking it, ``Referer``) is xend's own and whose form
  field ``csrf_token`` is the HMAC of the ``xend_csrf`` cookie under this xend's secret.
  A page elsewhere can neither read the token nor set a cookie that matches a token of
  its making.

The secret lives as long as the xend process: a form loaded before a restart is refused
once, and reloading the page gives a fresh token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

from werkzeug import Request, Response

from xend_actors.errors import Forbidden

COOKIE = "xend_csrf"
FIELD = "csrf_token"
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{32,64}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FOREIGN_FETCH_SITES = ("cross-site", "same-site")


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of ``url``, ports always written; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


def own_origin(request: Request) -> str | None:
    """xend's own origin as this request reached it (scheme and ``Host``)."""
    return origin_of(f"{request.scheme}://{request.host}/")


def cross_site_refusal(request: Request) -> str | None:
    """Why ``request`` comes from another site, or None: for every client, every op."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if fetch_site in _FOREIGN_FETCH_SITES:
        return f"refused: a {fetch_site} request may not change anything here"
    origin = request.headers.get("Origin")
    if origin is not None and origin_of(origin) != own_origin(request):
        return f"refused: a request from {origin[:100]!r} may not change anything here"
    return None


class CsrfGuard:
    """Makes and checks the tokens of one xend's forms."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def token(self, cookie: str) -> str:
        """The form token that goes with ``cookie``."""
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def cookie(self, request: Request) -> tuple[str, bool]:
        """The browser's cookie value, or a new one; True when it must be set."""
        given = request.cookies.get(COOKIE, "")
        if _COOKIE_VALUE.fullmatch(given):
            return given, False
        return secrets.token_urlsafe(32), True

    @staticmethod
    def set_cookie(response: Response, value: str, secure: bool) -> None:
        # Lax, not Strict: a link from elsewhere must not get a new cookie that
        # invalidates the forms open in other tabs.
        response.set_cookie(COOKIE, value, path="/", httponly=True, samesite="Lax",
                            secure=secure)

    def check(self, request: Request, token: str | None) -> None:
        """Raise ``Forbidden`` unless ``request`` is a same-origin POST with a valid token."""
        if request.method != "POST":
            raise Forbidden("refused: a browser changes things only with a POST form")
        refusal = cross_site_refusal(request)
        if refusal:
            raise Forbidden(refusal)
        sender = request.headers.get("Origin") or request.headers.get("Referer")
        if not sender or origin_of(sender) != own_origin(request):
            raise Forbidden("refused: the form does not come from this xend's own pages")
        cookie = request.cookies.get(COOKIE, "")
        if not _COOKIE_VALUE.fullmatch(cookie) or not token or not hmac.compare_digest(
                token, self.token(cookie)):
            raise Forbidden("refused: the form's token is missing or stale; "
                            "reload the page and try again")
