"""When a domain that exited is started again (facts §7.2 to 7.4), and the words that
name why a domain shuts down.

Decisions on the original's quirks, kept here with the rule they change:
- A crashed domain is restarted when its mode says ``always`` (the original never
  restarted a crashed domain, facts §15 item 9: that made ``always`` a lie).
- ``halt`` is a shutdown that never restarts, whatever the mode; ``reboot``, asked
  of xend by shutdown or destroy, always restarts, even under ``never``.
- A restart less than the minimum restart time after the previous one is refused
  and the domain destroyed, so a guest crashing at boot cannot loop.
"""

from __future__ import annotations

from collections.abc import Mapping

from xend_actors.domain.config import RestartMode
from xend_actors.errors import BadRequest
from xend_actors.hypervisor.base import ShutdownReason

# The words a client may name a shutdown or a destroy by.
SHUTDOWN_REASONS = {r.value: r for r in (ShutdownReason.POWEROFF, ShutdownReason.REBOOT,
                                         ShutdownReason.HALT, ShutdownReason.SUSPEND,
                                         ShutdownReason.SYSRQ)}
DESTROY_REASONS = {"halt": ShutdownReason.HALT, "reboot": ShutdownReason.REBOOT}


def restart_wanted(mode: RestartMode, exit_reason: ShutdownReason,
                   requested: ShutdownReason | None) -> bool:
    """Whether a domain that exited for ``exit_reason`` is to be started again."""
    if requested is ShutdownReason.HALT:
        return False
    if requested is ShutdownReason.REBOOT:
        return True
    if mode is RestartMode.ALWAYS:
        return True
    return mode is RestartMode.ONREBOOT and exit_reason is ShutdownReason.REBOOT


def restarting_too_fast(last_restart: float | None, now: float, minimum: float) -> bool:
    return last_restart is not None and now - last_restart < minimum


def reason_named(word: str, reasons: Mapping[str, ShutdownReason]) -> ShutdownReason:
    """The reason ``word`` names among ``reasons``; BadRequest if none."""
    reason = reasons.get(word)
    if reason is None:
        raise BadRequest(f"invalid reason:{word[:40]}: use {', '.join(reasons)}")
    return reason
