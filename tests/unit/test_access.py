"""Tokens, sessions and the failure limiter: the keys the gate checks, on a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from xend_actors.access.identity import Principal, Role, Via
from xend_actors.access.ratelimit import FailureLimiter
from xend_actors.access.revocations import Revocations
from xend_actors.access.sessions import MAX_SESSIONS, Sessions
from xend_actors.access.tokens import Tokens
from xend_actors.errors import BadRequest, Conflict, NotFound
from xend_actors.store import RecordDir


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_stands_for_its_name_and_role_and_survives_a_restart(tmp_path: Path) -> None:
    tokens = Tokens(RecordDir(tmp_path))
    admin = tokens.create("ci", Role.ADMIN)
    viewer = tokens.create("eyes", Role.VIEWER)
    assert tokens.principal(admin) == Principal("ci", Role.ADMIN, Via.TOKEN)
    again = Tokens(RecordDir(tmp_path))  # as a xend started again reads them
    assert again.principal(viewer) == Principal("eyes", Role.VIEWER, Via.TOKEN)
    assert [info.name for info in again.infos()] == ["ci", "eyes"]
    assert admin.split(".", 1)[1] not in (tmp_path / "ci").read_text()


@pytest.mark.parametrize("wrong", ["", "ci", "ci.", "ci.x", "nobody.x", ".x", "a" * 200,
                                   "ci.x.y", "../ci.x"])
def test_a_wrong_or_malformed_token_is_nobody(tmp_path: Path, wrong: str) -> None:
    tokens = Tokens(RecordDir(tmp_path))
    tokens.create("ci", Role.ADMIN)
    assert tokens.principal(wrong) is None


def test_a_deleted_token_stops_working_at_once(tmp_path: Path) -> None:
    tokens = Tokens(RecordDir(tmp_path))
    secret = tokens.create("ci", Role.ADMIN)
    tokens.delete("ci")
    assert tokens.principal(secret) is None
    assert not (tmp_path / "ci").exists()
    with pytest.raises(NotFound):
        tokens.delete("ci")


def test_names_are_checked_and_unique(tmp_path: Path) -> None:
    tokens = Tokens(RecordDir(tmp_path))
    tokens.create("ci", Role.ADMIN)
    with pytest.raises(Conflict):
        tokens.create("ci", Role.VIEWER)
    for bad in ("", "a.b", "a/b", "x" * 65, "corrupt\n"):
        with pytest.raises(BadRequest):
            tokens.create(bad, Role.ADMIN)


def test_a_corrupt_token_record_is_no_token(tmp_path: Path) -> None:
    (tmp_path / "ci").write_text("(token (name ci) (role root) (sha256 00))")
    assert Tokens(RecordDir(tmp_path)).infos() == []


def test_a_session_lasts_its_lifetime_and_ends_at_logout() -> None:
    clock = Clock()
    sessions = Sessions(60, clock)
    alice = Principal("alice", Role.ADMIN, Via.SESSION)
    first, second = sessions.open(alice), sessions.open(alice)
    assert first != second and sessions.principal(first) == alice
    sessions.close(second)
    assert sessions.principal(second) is None
    clock.now += 60
    assert sessions.principal(first) is None
    assert sessions.principal("") is None and sessions.principal("x" * 1000) is None


def test_the_oldest_session_goes_when_there_are_too_many() -> None:
    sessions = Sessions(60)
    bob = Principal("bob", Role.VIEWER, Via.SESSION)
    oldest = sessions.open(bob)
    newest = [sessions.open(bob) for _ in range(MAX_SESSIONS)]
    assert sessions.principal(oldest) is None and sessions.principal(newest[-1]) == bob


def test_a_client_that_fails_too_often_waits_out_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
    assert limiter.blocked_for("10.0.0.1") == 0
    clock.now += 30
    limiter.failed("10.0.0.1")
    assert limiter.blocked_for("10.0.0.1") == pytest.approx(30)  # the first one ages out
    assert limiter.blocked_for("10.0.0.2") == 0  # others are not held
    clock.now += 30
    assert limiter.blocked_for("10.0.0.1") == 0


def test_deleting_a_token_or_closing_a_session_revokes_its_credential(tmp_path: Path) -> None:
    revoked: list[str] = []
    revocations = Revocations()
    revocations.listen(revoked.append)
    tokens = Tokens(RecordDir(tmp_path), revocations)
    sessions = Sessions(60, revocations=revocations)
    token = tokens.principal(tokens.create("ci", Role.ADMIN))
    session_id = sessions.open(Principal("alice", Role.ADMIN, Via.SESSION))
    session = sessions.principal(session_id)
    assert token is not None and session is not None
    tokens.delete("ci")
    sessions.close(session_id)
    sessions.close(session_id)  # already closed: nothing more to revoke
    assert revoked == [token.credential, session.credential]
    assert token.credential == "token ci" and session.credential.startswith("session ")
