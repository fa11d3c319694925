"""``/xend/login`` and ``/xend/logout``: a browser's way in (a PAM login) and out.

Both are public (the gate lets clients not yet known reach them) and both are browser
forms only: their POSTs pass the CSRF guard of every form (``csrf.py``: xend's own
origin and the form token), so no page elsewhere can log a browser in as somebody else
(login CSRF) or out. Programs use API tokens instead.

A login checks the password with PAM (``access/logins.py``); failed logins count
against the client's address (``access/ratelimit.py``, shared with the gate's tokens),
and a client that failed too often is refused a while (429) before PAM is asked. A good
login opens a session (``access/sessions.py``) and sets its cookie: HttpOnly,
SameSite=Strict, for ``/xend/`` only, Secure over TLS, as long as the session lasts.
The page to go on to (``next``) must be a path under ``/xend/``: never another site.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any
from urllib.parse import quote, urlsplit

from werkzeug import Request, Response

from xend_actors import sxp
from xend_actors.access.identity import principal_of
from xend_actors.access.logins import PamLogins
from xend_actors.access.sessions import COOKIE
from xend_actors.config import XendConfig
from xend_actors.errors import BadRequest, Unauthorized
from xend_actors.web.forms import Param, optional
from xend_actors.web.gate import LOGIN_PATH, Keys
from xend_actors.web.negotiate import wants_html
from xend_actors.web.resource import Resource, op

log = logging.getLogger(__name__)

LOGOUT_PATH = "/xend/logout"
HOME = "/xend/domain/"  # where a login goes when it was not sent from elsewhere
MAX_NEXT = 2048
# Characters a next path keeps as they are; anything else is percent-encoded.
_URL_SAFE = "/?&=%:@!$'()*+,;~-._"
REFUSED = "Wrong user name or password, or a user who may not use xend"


def next_path(given: str | None) -> str:
    """Where to go after logging in: ``given`` if it is a path under ``/xend/``, else home.

    Only a path is taken (no scheme, no host, no ``//`` or backslash, which browsers may
    read as another host), and it is sent on percent-encoded, so it can neither lead
    elsewhere nor break the ``Location`` header.
    """
    if not given or len(given) > MAX_NEXT:
        return HOME
    try:
        parts = urlsplit(given)
    except ValueError:
        return HOME
    if (parts.scheme or parts.netloc or not given.startswith("/xend/") or "//" in parts.path
            or "\\" in given or parts.path.rstrip("/") in (LOGIN_PATH, LOGOUT_PATH)):
        return HOME
    return quote(given.split("#", 1)[0], safe=_URL_SAFE)


def _for_browsers(request: Request) -> None:
    if not wants_html(request.environ):
        raise BadRequest("The login form is for browsers; programs use an API token "
                         "(Authorization: Bearer TOKEN, see xm token-create)")


# The session cookie's attributes; a logout must name the same to remove it.
def _cookie_attributes(request: Request) -> dict[str, Any]:
    return {"path": "/xend/", "httponly": True, "samesite": "Strict",
            "secure": request.scheme == "https"}


class LoginResource(Resource):
    """GET: the login form. POST ``op=login username password [next]``: log in."""

    public = True

    def __init__(self, config: XendConfig, keys: Keys, logins: PamLogins | None = None) -> None:
        self.lifetime = math.ceil(config.session_lifetime)
        self.keys = keys
        self.logins = logins or PamLogins(keys.limiter, config.admin_group,
                                          config.viewer_group)

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        # The form again after a refused login keeps where it was going (a POST's field).
        return ["login", ["next", next_path(request.values.get("next"))]]

    @op("login", params=(Param("username"), Param("password"), optional("next")))
    def login(self, request: Request, username: str, password: str,
              next: str | None) -> Response:
        _for_browsers(request)
        address = request.remote_addr or ""
        principal = self.logins.principal(username, password, address)
        if principal is None:
            log.warning("Refused a login as %r from %s", _printable(username), address)
            raise Unauthorized(REFUSED)
        # A login replaces the browser's earlier session, if it had one.
        self.keys.sessions.close(request.cookies.get(COOKIE, ""))
        session = self.keys.sessions.open(principal)
        log.info("%s logged in from %s, as %s", principal, address, principal.role.value)
        response = Response(status=303, headers={"Location": next_path(next)})
        response.set_cookie(COOKIE, session, max_age=self.lifetime,
                            **_cookie_attributes(request))
        return response


class LogoutResource(Resource):
    """POST ``op=logout``: end the browser's session. GET: to the login form."""

    public = True

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def get(self, request: Request, **url_args: str) -> Response:
        return Response(status=303, headers={"Location": LOGIN_PATH})

    @op("logout")
    def logout(self, request: Request) -> Response:
        _for_browsers(request)
        self.keys.sessions.close(request.cookies.get(COOKIE, ""))
        principal = principal_of(request.environ)
        if principal is not None:
            log.info("%s logged out", principal)
        response = Response(status=303, headers={"Location": LOGIN_PATH})
        response.delete_cookie(COOKIE, **_cookie_attributes(request))
        return response


def _printable(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text)[:64]
