"""Session records (transfer/records.py): the exact SXP the store's migrate/ folder and
the xend.domain.save and xend.domain.migrate events carry, both ways."""

from __future__ import annotations

import pytest

from xend_actors import sxp
from xend_actors.transfer import records
from xend_actors.transfer.records import (
    Destination,
    MigrateRecord,
    RestoreRecord,
    SaveRecord,
    SessionState,
    Source,
)

EXACT: list[tuple[records.SessionRecord, str]] = [
    (SaveRecord("1", SessionState.BEGIN, 5, "/tmp/s1.save"),
     "(save (id 1) (state begin) (domain 5) (file /tmp/s1.save))"),
    (SaveRecord("12", SessionState.ERROR, 5, "/srv/a b.save", paused=True),
     "(save (id 12) (state error) (domain 5) (file '/srv/a b.save') (paused 1))"),
    (SaveRecord("13", SessionState.BEGIN, 5, "/srv/a.save", partial="/srv/.tmp-a.save.0a1b"),
     "(save (id 13) (state begin) (domain 5) (file /srv/a.save) (partial /srv/.tmp-a.save.0a1b))"),
    (RestoreRecord("2", "/tmp/s1.save"), "(restore (id 2) (file /tmp/s1.save))"),
    (RestoreRecord("2", "/tmp/s1.save", 7), "(restore (id 2) (file /tmp/s1.save) (domain 7))"),
    (MigrateRecord("3", SessionState.BEGIN, True, Source("a", 5), Destination("b"), 0),
     "(migrate (id 3) (state begin) (live 1) (resource 0) (src (host a) (domain 5)) "
     "(dst (host b)))"),
    (MigrateRecord("3", SessionState.COMMIT, False, Source("a", 5), Destination("b", 9), 100,
                   paused=False),
     "(migrate (id 3) (state commit) (live 0) (resource 100) (paused 0) "
     "(src (host a) (domain 5)) (dst (host b) (domain 9)))"),
    (MigrateRecord("3", SessionState.OK, True, Source("a", 5),
                   Destination("b", 9, downtime=0.125, duration=3.5), 0),
     "(migrate (id 3) (state ok) (live 1) (resource 0) (src (host a) (domain 5)) "
     "(dst (host b) (domain 9) (downtime 0.125) (duration 3.500)))"),
    (MigrateRecord("in-2", SessionState.RECEIVE, True, Source("10.0.0.1", 9),
                   Destination("b", 4)),
     "(migrate (id in-2) (state receive) (live 1) (src (host 10.0.0.1) (domain 9)) "
     "(dst (host b) (domain 4)))"),
]


@pytest.mark.parametrize(("record", "text"), EXACT, ids=lambda x: str(x)[:40])
def test_a_record_is_the_sxp_it_always_was_and_reads_back(
        record: records.SessionRecord, text: str) -> None:
    assert sxp.show(records.to_sxpr(record)) == text
    assert records.from_sxpr(sxp.parse(text)) == record


def test_times_keep_three_decimals_and_read_back_to_the_same_text() -> None:
    record = MigrateRecord("4", SessionState.OK, False, Source("a", 1),
                           Destination("b", 2, downtime=0.0004, duration=12.34567))
    text = sxp.show(records.to_sxpr(record))
    assert text.endswith("(downtime 0.000) (duration 12.346)))")
    assert sxp.show(records.to_sxpr(records.from_sxpr(sxp.parse(text)))) == text


def test_a_migration_in_is_told_by_its_key() -> None:
    migrations = [records.from_sxpr(sxp.parse(text)) for _, text in EXACT
                  if text.startswith("(migrate")]
    assert [m.incoming for m in migrations if isinstance(m, MigrateRecord)] == [
        False, False, False, True]


@pytest.mark.parametrize("text", [
    "(save (id 1) (state begin) (domain x) (file /f))",  # a domain that is no number
    "(save (id 1) (state bogus) (domain 5) (file /f))",
    "(save (id 1) (state begin) (domain 5))",  # no file
    "(save (id 1) (state begin) (domain 5) (file /f) (paused 2))",
    "(restore (file /f))",  # no id
    "(migrate (id 3) (state begin) (live 1) (dst (host b)))",  # no src
    "(migrate (id 3) (state begin) (src (host a) (domain 5)) (dst (host b)))",  # no live
    "(migrate (id 3) (state ok) (live 1) (src (host a) (domain 5)) "
    "(dst (host b) (downtime soon)))",
    "(transfer (id 1))",
    "save",
])
def test_a_malformed_record_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        records.from_sxpr(sxp.parse(text))


def test_only_a_save_record_must_outlive_the_host() -> None:
    """A save's record names its half-written file, which a host crash leaves on disk;
    the others name moving domains, which it ends."""
    durable = [records.durable(record) for record, _ in EXACT]
    assert durable == [isinstance(record, SaveRecord) for record, _ in EXACT]
    assert any(durable) and not all(durable)
