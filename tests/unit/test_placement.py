"""Placement (pool/placement.py): the member with the most free memory that fits, ties by
the fewest domains; none that fits is a 409 naming the need and the best free figure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors.pool.entries import HostEntry
from xend_actors.pool.placement import NoRoom, place


def member(host: str, free_mb: int, domains: int = 0, relocation: str = "") -> HostEntry:
    return HostEntry(host, f"https://{host}:8000", "AA", free_mb, 4, domains, 0.0, 0.0,
                     relocation)


def test_the_member_with_the_most_free_memory_is_chosen() -> None:
    hosts = [member("a", 1000), member("b", 3000), member("c", 2000)]
    assert place(hosts, 512).host == "b"


def test_a_tie_goes_to_the_member_with_fewer_domains_then_by_name() -> None:
    assert place([member("a", 2000, 3), member("b", 2000, 1)], 512).host == "b"
    assert place([member("b", 2000, 1), member("a", 2000, 1)], 512).host == "a"


def test_a_domain_that_fits_nowhere_names_its_need_and_the_best_figure() -> None:
    with pytest.raises(NoRoom) as raised:
        place([member("a", 1000), member("b", 1500)], 4096, what="domain big")
    assert raised.value.status == 409
    assert raised.value.message == ("no pool member has room for domain big: it needs "
                                    "4096 MB, the most free is 1500 MB (on b)")


def test_only_the_members_named_are_candidates() -> None:
    hosts = [member("a", 9000), member("b", 1500), member("c", 1000)]
    assert place(hosts, 512, among=frozenset({"b", "c"})).host == "b"
    with pytest.raises(NoRoom, match="no pool member to place domain x on"):
        place(hosts, 512, among=frozenset(), what="domain x")


def test_an_exact_fit_fits() -> None:
    assert place([member("a", 512)], 512).host == "a"


def test_host_entries_of_older_members_read_without_a_relocation_address() -> None:
    entry = member("a", 100, relocation="10.0.0.1:8002")
    assert HostEntry.from_json(entry.to_json()) == entry
    old = (b'{"api":"https://a:8000","cpus":4,"domains":0,"fingerprint":"AA",'
           b'"free_mb":100,"host":"a","joined":0.0,"load":0.0}')
    assert HostEntry.from_json(old).relocation == ""


entries = st.lists(st.builds(member, st.sampled_from("abcdefgh"), st.integers(0, 10000),
                             st.integers(0, 50)), min_size=1, max_size=8)


@given(entries, st.integers(1, 10000))
def test_the_choice_fits_and_none_fits_better(hosts: list[HostEntry], need: int) -> None:
    try:
        chosen = place(hosts, need)
    except NoRoom:
        assert all(h.free_mb < need for h in hosts)
        return
    assert chosen in hosts and chosen.free_mb >= need
    assert all((h.free_mb, -h.domains) <= (chosen.free_mb, -chosen.domains) for h in hosts)
