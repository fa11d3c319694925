"""Local users and groups a test makes (and removes): the unprivileged clients of xend."""

from __future__ import annotations

import contextlib
import grp
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    password: str


def _run(*command: str, input: str | None = None) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, input=input,
                   timeout=60)


@contextlib.contextmanager
def local_group(prefix: str = "xg") -> Iterator[str]:
    """A new group, removed afterwards; its name."""
    name = f"{prefix}{secrets.token_hex(4)}"
    _run("groupadd", name)
    try:
        yield name
    finally:
        _run("groupdel", name)


@contextlib.contextmanager
def local_user(*groups: str, prefix: str = "xu") -> Iterator[User]:
    """A new user with a password and a home, in ``groups``; removed afterwards."""
    name = f"{prefix}{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    extra = ["-G", ",".join(groups)] if groups else []
    _run("useradd", "--create-home", "--shell", "/bin/sh", *extra, name)
    try:
        _run("chpasswd", input=f"{name}:{password}\n")
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid, password)
    finally:
        _run("userdel", "--remove", name)


def as_user(user: User) -> dict[str, object]:
    """``subprocess.run`` arguments that run the command as ``user`` (and its groups)."""
    groups = [g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem]
    return {"user": user.uid, "group": user.gid, "extra_groups": groups,
            "env": {"PATH": "/usr/bin:/bin", "HOME": f"/home/{user.name}"}}
