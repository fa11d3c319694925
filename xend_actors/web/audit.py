"""The audit trail: every op a client runs, who ran it and how it ended.

Each op (every POST, and the few GETs that run one) is one ``AuditEntry``: logged on
xend's log as one line and published as the event ``xend.audit``, so an operator can
follow who does what as it happens (``xm`` reads events) and look back in the log.
Refusals (401 is the gate's; 403 here) are entries too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from xend_actors import sxp
from xend_actors.access.identity import Principal

log = logging.getLogger("xend.audit")

EVENT = "xend.audit"


@dataclass(frozen=True)
class AuditEntry:
    who: Principal | None
    op: str
    path: str
    domain: str | None  # the domain the URL names, if it names one
    status: int
    message: str = ""  # the error's, if it failed

    def sxpr(self) -> sxp.Value:
        value: list[sxp.Value] = ["audit", ["who", str(self.who or "unknown")],
                                  ["op", self.op], ["path", self.path]]
        if self.domain is not None:
            value.append(["domain", self.domain])
        value.append(["status", str(self.status)])
        if self.message:
            value.append(["message", self.message])
        return value


Publish = Callable[[str, sxp.Value], object]


class Audit:
    """Writes each entry to the log and publishes it (``publish`` is the event bus's)."""

    def __init__(self, publish: Publish | None = None) -> None:
        self._publish = publish

    def __call__(self, entry: AuditEntry) -> None:
        where = f" on domain {entry.domain}" if entry.domain is not None else ""
        failed = f": {entry.message}" if entry.message else ""
        log.info("%s ran %s on %s%s: %d%s", entry.who or "unknown", entry.op, entry.path,
                 where, entry.status, failed)
        if self._publish is not None:
            self._publish(EVENT, entry.sxpr())
