"""The pool's token file (access/pool_token.py): taken only when it is fit to hold a
secret, like an ssh key; the token is the admin ``pool`` and nothing else is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xend_actors.access.identity import Role
from xend_actors.access.pool_token import PoolTokenError, make_pool_token, read_pool_token
from xend_actors.access.tokens import Tokens
from xend_actors.errors import BadRequest
from xend_actors.store import RecordDir


def test_a_made_token_is_read_back_and_stands_for_the_admin_pool(tmp_path: Path) -> None:
    path = tmp_path / "pool.token"
    make_pool_token(path)
    assert path.stat().st_mode & 0o777 == 0o600
    token = read_pool_token(path)
    principal = token.principal(path.read_text().strip())
    assert principal is not None and principal.role is Role.ADMIN
    assert str(principal) == "token pool"
    assert token.principal(token.token + "x") is None
    assert token.principal("") is None


def test_a_token_file_is_never_made_over_another(tmp_path: Path) -> None:
    path = tmp_path / "pool.token"
    path.write_text("mine")
    with pytest.raises(PoolTokenError, match="exists"):
        make_pool_token(path)
    assert path.read_text() == "mine"


@pytest.mark.parametrize(("content", "mode", "why"), [
    (None, 0o600, "No such file"),
    ("", 0o600, "empty"),
    ("\n", 0o600, "empty"),
    ("pool.short", 0o600, "not a token"),
    ("pool." + "x" * 40 + " spaces inside", 0o600, "not a token"),
    ("pool." + "x" * 200, 0o600, "not a token"),
    ("pool." + "x" * 40, 0o640, "group or others may use it (mode 0640)"),
    ("pool." + "x" * 40, 0o604, "group or others"),
])
def test_an_unfit_token_file_is_refused_saying_why(tmp_path: Path, content: str | None,
                                                  mode: int, why: str) -> None:
    path = tmp_path / "pool.token"
    if content is not None:
        path.write_text(content)
        os.chmod(path, mode)
    with pytest.raises(PoolTokenError) as raised:
        read_pool_token(path)
    assert raised.value.message.startswith(f"xend-pool-token-file {path}: ")
    assert why in raised.value.message


def test_a_directory_or_a_link_is_not_a_token_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(PoolTokenError, match="not a regular file"):
        read_pool_token(tmp_path / "dir")
    make_pool_token(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(PoolTokenError):
        read_pool_token(tmp_path / "link")


def test_no_api_token_may_take_the_pool_s_name(tmp_path: Path) -> None:
    tokens = Tokens(RecordDir(tmp_path / "token"))
    with pytest.raises(BadRequest, match="Token name pool is reserved"):
        tokens.create("pool", Role.ADMIN)
    assert tokens.infos() == []


def test_whom_a_forwarding_member_acted_for_is_shown_only_when_fit(tmp_path: Path) -> None:
    make_pool_token(tmp_path / "token")
    token = read_pool_token(tmp_path / "token")
    said = token.principal(token.token, "uid 0 via xen-a")
    assert str(said) == "token pool for uid 0 via xen-a"
    for unfit in ("", "x" * 129, "a') (op destroy", "line\nbreak"):
        shown = token.principal(token.token, unfit)
        assert str(shown) == "token pool", unfit
    assert token.principal("pool.wrong", "uid 0 via xen-a") is None
