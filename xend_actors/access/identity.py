"""Who a request comes from: the ``Principal`` every door establishes before anything runs.

A door (the HTTP listeners, the console WebSocket, the debug socket) knows its client
in one of a few ways (``Via``): the Unix socket's peer uid (``SO_PEERCRED``), an API
token, a browser session after a PAM login, or nothing at all where the operator said
``(xend-http-auth no)``. Whatever the way, the client becomes one ``Principal`` with
one ``Role``; authorization asks only the role, audit names the principal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# Where the HTTP gate leaves the request's principal in the WSGI environ.
ENVIRON_KEY = "xend.principal"


class Role(Enum):
    """What a principal may do: admins everything, viewers only look."""

    ADMIN = "admin"
    VIEWER = "viewer"


class Via(Enum):
    """How the principal was known."""

    UNIX = "unix"  # the admin Unix socket: the peer's uid
    UNIX_RO = "unix-ro"  # the read-only Unix socket: the peer's uid, always a viewer
    TOKEN = "token"  # Authorization: Bearer <token>
    SESSION = "session"  # a browser's session cookie, after a PAM login
    OPEN = "open"  # (xend-http-auth no): nobody is asked, as in the original


@dataclass(frozen=True)
class Principal:
    """One known client: ``name`` is the uid, the token's or the PAM user's name."""

    name: str
    role: Role
    via: Via
    # The credential that let it in (``token ci``, ``session <id>``): what a revocation
    # names, so that what it holds open (a console) ends when the credential does.
    credential: str = field(default="", compare=False)
    # For the pool's token: whom the member that forwarded the request was asked by
    # (``uid 0 via xen-a``), as that member said: shown in the audit, trusted for nothing.
    on_behalf: str = field(default="", compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def __str__(self) -> str:
        """How audit lines and events name the client, e.g. ``token ci`` or ``uid 0``."""
        if self.via in (Via.UNIX, Via.UNIX_RO):
            return f"uid {self.name}"
        if self.via is Via.SESSION:
            return f"user {self.name}"
        if self.via is Via.OPEN:
            return "anonymous"
        if self.on_behalf:
            return f"token {self.name} for {self.on_behalf}"
        return f"token {self.name}"


ANONYMOUS = Principal("anonymous", Role.ADMIN, Via.OPEN)


def principal_of(environ: Mapping[str, Any]) -> Principal | None:
    """The principal the gate found for this request; None if no gate saw it, which
    every door treats as unknown (401): a listener without a gate lets nobody in."""
    found = environ.get(ENVIRON_KEY)
    return found if isinstance(found, Principal) else None
