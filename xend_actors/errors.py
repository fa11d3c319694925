"""The errors xend raises: each carries a sentence a user can act on.

Every subclass names the HTTP status the web layer answers with, so the mapping
from failure to status lives with the failure, not in each handler.
"""

from __future__ import annotations


class XendError(Exception):
    """A failure whose message is meant for the user; HTTP 500 unless a subclass says."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadRequest(XendError):
    """The request or its input is malformed (HTTP 400)."""

    status = 400


class Unauthorized(XendError):
    """The client is not known: no credentials, or wrong ones (HTTP 401)."""

    status = 401


class Forbidden(XendError):
    """The client may not do this (HTTP 403)."""

    status = 403


class NotFound(XendError):
    """No such domain, console, device or vnet (HTTP 404)."""

    status = 404


class Conflict(XendError):
    """The request clashes with the current state, e.g. a name in use (HTTP 409)."""

    status = 409


class TooManyRequests(XendError):
    """The client failed too often lately and must wait (HTTP 429)."""

    status = 429


class HypervisorError(XendError):
    """The hypervisor driver could not do what was asked (HTTP 500)."""

    status = 500


class BadGateway(XendError):
    """Another host xend talks to refused, broke off or answered nonsense: a relocation
    peer (HTTP 502). Not the hypervisor's failure, nor xend's."""

    status = 502


class Timeout(XendError):
    """A part of xend did not answer in time (HTTP 504)."""

    status = 504
