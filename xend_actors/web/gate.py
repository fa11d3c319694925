"""The gate in front of every HTTP listener: who the client is, known before anything runs.

Each listener is one ``Door`` and wraps the app in a ``Gate``, which leaves the
request's ``Principal`` in the environ (``access.identity.ENVIRON_KEY``) or answers
itself:

- the admin Unix socket: the peer's uid (``SO_PEERCRED``, put in the environ by the
  listener) must be root's or a member's of ``xend-unix-group``: an admin;
- the read-only Unix socket: whoever connects is a viewer;
- TCP: ``xend-hosts-allow`` first (403); then, unless ``(xend-http-auth no)``, an API
  token (``Authorization: Bearer``; in a pool, the pool's token too: the admin ``pool``)
  or a browser's session cookie. A client without
  either gets 401 with ``WWW-Authenticate`` (a browser's GET: a redirect to the login
  page); a wrong token is 401 and counts against the client's address, which after
  too many is refused a while (429) whatever it sends.

What a principal may do is the app's to say (``app.authorize``); the gate only knows
who. The login page, static files, ``/favicon.ico`` and ``/`` (a redirect to
``/xend/``) are served to clients not yet known.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from werkzeug import Request, Response

from xend_actors.access.hosts import client_allowed
from xend_actors.access.identity import ANONYMOUS, ENVIRON_KEY, Principal, Role, Via
from xend_actors.access.pool_token import ON_BEHALF, PoolToken
from xend_actors.access.ratelimit import FailureLimiter
from xend_actors.access.revocations import Revocations
from xend_actors.access.sessions import COOKIE, Sessions
from xend_actors.access.tokens import MAX_TOKEN_LENGTH, Tokens
from xend_actors.config import XendConfig
from xend_actors.errors import (
    BadRequest,
    Forbidden,
    TooManyRequests,
    Unauthorized,
    XendError,
)
from xend_actors.web.negotiate import HTML, Format, error_response, wanted

log = logging.getLogger(__name__)

# Where a Unix listener leaves its peer's uid in the environ (no header can set it).
PEER_UID = "xend.peer_uid"
LOGIN_PATH = "/xend/login"
# "/" only redirects to /xend/ (the session cookie is not sent for "/": its path is /xend/).
_PUBLIC = re.compile(r"/|/favicon\.ico|/xend/(login|logout)/?|/xend/static/[^/]+")
_BEARER = re.compile(r"Bearer ([A-Za-z0-9._~+/-]+=*)", re.IGNORECASE)
MAX_AUTHORIZATION = MAX_TOKEN_LENGTH + 16
CHALLENGE = 'Bearer realm="xend"'  # what a 401 names as the way in


class Door(Enum):
    """Which listener a request came through."""

    TCP = "tcp"
    UNIX = "unix"
    UNIX_RO = "unix-ro"


@dataclass(frozen=True)
class Keys:
    """What the gate checks credentials against; shared with the web's login and tokens."""

    tokens: Tokens
    sessions: Sessions
    limiter: FailureLimiter
    # Told by the tokens and sessions above when a credential ends (if they were given it).
    revocations: Revocations = field(default_factory=Revocations)
    pool_token: PoolToken | None = None  # a pool member's: the admin ``pool`` (pool_token.py)


class Gate:
    """WSGI middleware: establishes the principal of each request on one door."""

    def __init__(self, app: WSGIApplication, door: Door, config: XendConfig,
                 keys: Keys) -> None:
        self.app = app
        self.door = door
        self.config = config
        self.keys = keys
        self._group = group_id(config.unix_group) if config.unix_group else None

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        environ.pop(ENVIRON_KEY, None)
        if self.door is not Door.TCP:  # known by the socket alone: no request to read
            try:
                environ[ENVIRON_KEY] = self._local(environ)
            except XendError as error:
                return _refusal(error, wanted(environ))(environ, start_response)
            return self.app(environ, start_response)
        request = Request(environ)
        try:
            principal = self.principal(request)
        except XendError as error:
            return _refusal(error, wanted(environ))(environ, start_response)
        if principal is not None:
            environ[ENVIRON_KEY] = principal
        elif not _PUBLIC.fullmatch(request.path):
            return self._unknown(request)(environ, start_response)
        return self.app(environ, start_response)

    def principal(self, request: Request) -> Principal | None:
        """Who sent ``request``; None when it carries no credentials at all."""
        if self.door is not Door.TCP:
            return self._local(request.environ)
        address = request.remote_addr or ""
        if not client_allowed(address, self.config.hosts_allow):
            raise Forbidden(f"client {address} is not allowed by xend-hosts-allow")
        if not self.config.http_auth:
            return ANONYMOUS
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            return self._token(authorization, address, request)
        session = request.cookies.get(COOKIE)
        if session:
            # An expired or unknown cookie is no credentials: the browser logs in again.
            return self.keys.sessions.principal(session)
        return None

    def _local(self, environ: WSGIEnvironment) -> Principal:
        """Who is on the other end of a Unix socket: by its uid, whatever it sends."""
        if self.door is Door.UNIX_RO:
            return Principal(str(environ.get(PEER_UID, "?")), Role.VIEWER, Via.UNIX_RO)
        return self._unix_admin(environ.get(PEER_UID))

    def _unix_admin(self, uid: object) -> Principal:
        if not isinstance(uid, int):
            raise Forbidden("the peer of xend's Unix socket is unknown")
        if uid != 0 and not (self._group is not None and _in_group(uid, self._group)):
            raise Forbidden(f"uid {uid} may not use xend's Unix socket")
        return Principal(str(uid), Role.ADMIN, Via.UNIX)

    def _token(self, authorization: str, address: str, request: Request) -> Principal:
        limiter = self.keys.limiter
        wait = limiter.blocked_for(address)
        if wait > 0:
            raise TooManyRequests(f"Too many failed attempts from {address}; "
                                  f"try again in {wait:.0f} s")
        match = _BEARER.fullmatch(authorization.strip())
        if len(authorization) > MAX_AUTHORIZATION or match is None:
            limiter.failed(address)
            raise BadRequest("Malformed Authorization header: expected 'Bearer TOKEN'")
        token = match.group(1)
        pool = self.keys.pool_token
        principal = (pool.principal(token, request.headers.get(ON_BEHALF))
                     if pool is not None else None) or self.keys.tokens.principal(token)
        if principal is None:
            limiter.failed(address)
            log.warning("Refused an unknown API token from %s", address)
            raise Unauthorized("Unknown or wrong API token")
        return principal

    @staticmethod
    def _unknown(request: Request) -> Response:
        wants = wanted(request.environ)
        if wants is HTML:
            # A browser is sent to log in; a form it posted after its session expired
            # is not run (a redirect turns it into a GET of the login page).
            target = request.full_path.rstrip("?") if request.method == "GET" else request.path
            return Response(status=303, headers={
                "Location": f"{LOGIN_PATH}?next={quote(target, safe='/')}"})
        return _refusal(Unauthorized(
            "Authentication required: an API token (Authorization: Bearer TOKEN, "
            "see xm token-create) or a login"), wants)


def _refusal(error: XendError, wants: Format) -> Response:
    response = error_response(error.message, wants)  # a browser's too: no page yet
    response.status = f"{error.status} {error.message[:200]}"
    if error.status == 401:
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def group_id(name: str) -> int:
    """The gid of the group ``name`` the config names."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise XendError(f"xend-unix-group: no such group: {name}") from None


def _in_group(uid: int, gid: int) -> bool:
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return gid in os.getgrouplist(user.pw_name, user.pw_gid)
