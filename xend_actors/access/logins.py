"""PAM logins: a user name and a password become a ``Principal``, or nothing.

The password is checked by PAM under the service ``xend`` (``/etc/pam.d/xend``; where
that file is missing, Linux-PAM uses ``/etc/pam.d/other``, which on Debian is the
system's ``common-auth``: the users' own passwords). The role comes from the groups:
root and the members of ``xend-admin-group`` are admins, the members of
``xend-viewer-group`` viewers; anybody else is refused.

A refusal says nothing of why: an unknown user, a wrong password and a user in neither
group are refused alike, and in about the same time. So the login form is no oracle of
who exists or who may manage xend, and the passwords of users outside both groups are
never checked at all.

PAM blocks (a wrong password costs ``pam_unix`` about two seconds, on purpose), so a
check runs on the caller's own thread (a request's), and only a few at once. Failed
logins are counted per client address, and a client that failed too often is refused
for a while before PAM is asked.
"""

from __future__ import annotations

import grp
import logging
import math
import os
import pwd
import random
import re
import threading
import time
from collections.abc import Callable

from xend_actors.access.identity import Principal, Role, Via
from xend_actors.access.ratelimit import FailureLimiter
from xend_actors.errors import TooManyRequests, XendError

log = logging.getLogger(__name__)

SERVICE = "xend"
MAX_AT_ONCE = 4  # PAM checks running together; more wait for a turn
TURN_WAIT = 10.0  # seconds a check waits for its turn before the login is refused (503)
MAX_PASSWORD = 1024
# POSIX portable names, as useradd takes them by default (plus a Samba machine's '$').
USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?")
# What a failed PAM check takes until one has been timed: pam_unix's delay.
DEFAULT_FAIL_TIME = 2.0

Check = Callable[[str, str], bool]  # user, password → whether PAM accepts them


def pam_check(service: str = SERVICE) -> Check:
    def check(user: str, password: str) -> bool:
        import pam  # at the first login: a xend whose clients use tokens never loads PAM

        # One handle per check: a pam.pam() must not be shared between threads. No
        # setcred: a login here starts no process, so there are no credentials to set.
        return bool(pam.pam().authenticate(user, password, service=service,
                                           resetcreds=False))

    return check


class PamLogins:
    """Checks the logins of one xend: ``principal(user, password, client)``; thread-safe.

    Failures count against the client's address in ``limiter`` (the gate's, so wrong
    tokens and wrong passwords add up), and a client held off is refused before PAM is
    asked, also when its guesses come all at once: the count is looked at again when a
    check's turn comes, and a failure is counted before the turn is given up.
    """

    def __init__(self, limiter: FailureLimiter, admin_group: str = "",
                 viewer_group: str = "", check: Check | None = None,
                 fail_time: float = DEFAULT_FAIL_TIME) -> None:
        self.limiter = limiter
        self.admin_group = admin_group
        self.viewer_group = viewer_group
        self._check = check or pam_check()
        self._turns = threading.BoundedSemaphore(MAX_AT_ONCE)
        self._fail_time = fail_time  # what a refused password took PAM, last time

    def principal(self, user: str, password: str, client: str) -> Principal | None:
        """Who logs in with ``user`` and ``password`` from ``client`` (its address); None
        when refused, whatever the reason.

        Raises ``TooManyRequests`` (429) when the client failed too often lately, and
        ``XendError`` (503) when PAM is too busy to ask.
        """
        self._refuse_if_held_off(client)
        role = self.role(user) if _plausible(user, password) else None
        if role is None:
            # Refused without asking PAM, in the time PAM takes to refuse a password.
            time.sleep(self._fail_time * random.uniform(0.75, 1.25))
            self.limiter.failed(client)
            return None
        if not self._turns.acquire(timeout=TURN_WAIT):
            raise XendError("Too many logins are being checked at once; try again",
                            status=503)
        try:
            self._refuse_if_held_off(client)
            started = time.monotonic()
            if self._accepts(user, password):
                return Principal(user, role, Via.SESSION)
            self._fail_time = time.monotonic() - started
            self.limiter.failed(client)
            return None
        finally:
            self._turns.release()

    def _refuse_if_held_off(self, client: str) -> None:
        wait = self.limiter.blocked_for(client)
        if wait > 0:
            raise TooManyRequests(f"Too many failed logins from {client}: "
                                  f"try again in {math.ceil(wait)} s")

    def _accepts(self, user: str, password: str) -> bool:
        try:
            return self._check(user, password)
        except Exception:
            log.exception("PAM failed while checking a login of %s", user)
            return False

    def role(self, user: str) -> Role | None:
        """The role ``user`` would have: from uid 0 and the two groups; None: no role."""
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        if entry.pw_uid == 0:
            return Role.ADMIN
        groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
        for name, role in ((self.admin_group, Role.ADMIN), (self.viewer_group, Role.VIEWER)):
            gid = _group_id(name)
            if gid is not None and gid in groups:
                return role
        return None


def _plausible(user: str, password: str) -> bool:
    return (USER_NAME.fullmatch(user) is not None and 0 < len(password) <= MAX_PASSWORD
            and "\0" not in password)


def _group_id(name: str) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("No such group %s (xend-admin-group or xend-viewer-group): "
                    "nobody logs in through it", name)
        return None
