"""The pool's shared API token: one secret that every member of a pool holds in a file
(``xend-pool-token-file``), sends when it forwards a request to another member, and
takes from any client as the admin principal ``pool``.

The file is the operator's, made once (``xend pool-token FILE``) and copied to every
member like an ssh key: a regular file of xend's own user that nobody else may read or
write, holding one line, the token (at least 32 characters of those a bearer token
has). A file named that is anything else stops xend at start with one line saying what
is wrong, rather than a member that others cannot trust nor it them. The token is
compared by its SHA-256 in constant time, as the API tokens are (``tokens.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from xend_actors.access.identity import Principal, Role, Via
from xend_actors.access.tokens import MAX_TOKEN_LENGTH
from xend_actors.access.tokens import POOL as POOL_PRINCIPAL
from xend_actors.errors import XendError
from xend_actors.store import atomic_write

TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{32,}=*")  # what the gate takes as a bearer token
MAX_FILE = 4096  # bytes: a token file is one short line
# The header in which a member forwarding a request says whom it acts for, and what of it
# is shown: a principal and a member's name, nothing that could break an audit line.
ON_BEHALF = "X-Xend-Pool-For"
SHOWN = re.compile(r"[A-Za-z0-9 ._@:-]{1,128}")


class PoolTokenError(XendError):
    """The pool's token file is not fit to hold a secret (xend does not start)."""


class PoolToken:
    """The pool's token, as the gate checks it."""

    def __init__(self, token: str) -> None:
        self.token = token  # sent by this member when it forwards a request
        self._digest = _digest(token)

    def principal(self, token: str, on_behalf: str | None = None) -> Principal | None:
        """The ``pool`` admin if ``token`` is the pool's, saying whom the forwarding member
        acted for (``on_behalf``, what its ``ON_BEHALF`` header says, if it is fit to show);
        else None."""
        if not hmac.compare_digest(_digest(token), self._digest):
            return None
        shown = on_behalf if on_behalf and SHOWN.fullmatch(on_behalf) else ""
        return Principal(POOL_PRINCIPAL, Role.ADMIN, Via.TOKEN, f"token {POOL_PRINCIPAL}",
                         shown)


def read_pool_token(path: Path) -> PoolToken:
    """The token in ``path``; ``PoolTokenError`` naming the file and what is wrong."""
    where = f"xend-pool-token-file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as error:
        raise PoolTokenError(f"{where}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PoolTokenError(f"{where}: not a regular file")
        if info.st_uid != os.geteuid():
            raise PoolTokenError(f"{where}: owned by uid {info.st_uid}, not by xend's "
                                 f"(uid {os.geteuid()})")
        if info.st_mode & 0o077:
            raise PoolTokenError(f"{where}: group or others may use it (mode "
                                 f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
        raw = os.read(fd, MAX_FILE + 1)
    except OSError as error:
        raise PoolTokenError(f"{where}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    text = raw.decode("ascii", "replace").strip()
    if not text:
        raise PoolTokenError(f"{where}: empty")
    if len(text) > MAX_TOKEN_LENGTH or not TOKEN.fullmatch(text):
        raise PoolTokenError(f"{where}: not a token (one line of 32 to {MAX_TOKEN_LENGTH} "
                             "letters, digits and ._~+/-; make one with xend pool-token)")
    return PoolToken(text)


def make_pool_token(path: Path) -> None:
    """Write a new pool token to ``path`` (mode 0600), which must not exist yet."""
    if path.exists() or path.is_symlink():
        raise PoolTokenError(f"{path} exists: a pool has one token; copy that one "
                             "(or remove the file to make a new one for every member)")
    atomic_write(path, f"{POOL_PRINCIPAL}.{secrets.token_urlsafe(32)}\n".encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
