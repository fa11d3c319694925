"""The SXP→JSON mapping of docs/json.md: friendly where the SXP is a record, and always
reversible, so a JSON client reads exactly the values an SXP client reads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors import sxp
from xend_actors.web.sxp_json import dumps, error, from_json, to_json

ATOMS = st.one_of(st.sampled_from(["id", "name", "vif", "idx", "0", "1", "", "a b",
                                   "devices", "vm"]),
                  st.text(max_size=6))
NAMES = st.sampled_from(["id", "name", "vif", "devices", "vm", "ip", "0"])
LISTS = st.recursive(ATOMS, lambda inner: st.lists(inner, max_size=5), max_leaves=30)
# Records as xend writes them: named lists of named fields, some names repeated.
RECORDS = st.recursive(ATOMS, lambda inner: st.tuples(
    NAMES, st.lists(st.one_of(inner, st.tuples(NAMES, inner).map(list)), max_size=4),
).map(lambda named: [named[0], *named[1]]), max_leaves=30)
VALUES = st.one_of(LISTS, RECORDS)


@given(VALUES)
def test_every_value_comes_back_from_its_json_text(value: sxp.Value) -> None:
    assert from_json(json.loads(dumps(value))) == value


@pytest.mark.parametrize(("text", "mapped"), [
    ("web1", "web1"),
    ("(Domain-0 web1)", ["Domain-0", "web1"]),  # a list of names stays a list
    ("(Domain-0)", ["Domain-0"]),
    ("()", []),
    ("(ls node domain)", ["ls", "node", "domain"]),
    ("(domain (id 5) (name web1) (devices))",
     {"domain": {"id": "5", "name": "web1", "devices": []}}),
    ("(console (status listening) (evtchn 22 2))",
     {"console": {"status": "listening", "evtchn": ["22", "2"]}}),
    ("(devices (vif (idx 0)) (vif (idx 1)))",
     {"devices": [{"vif": {"idx": "0"}}, {"vif": {"idx": "1"}}]}),
    ("(devices (vbd (idx 0) (dev sda1)))",  # a collection of one is an array too
     {"devices": [{"vbd": {"idx": "0", "dev": "sda1"}}]}),
    ("(config (vm (name x) (image (linux (kernel /k)))))",
     {"config": {"vm": [{"name": "x"}, {"image": {"linux": {"kernel": "/k"}}}]}}),
    ("(event (seq 7) (value (web1 5)))", {"event": {"seq": "7", "value": {"web1": "5"}}}),
    ("((domain (id 0)) (domain (id 1)))", [{"domain": {"id": "0"}}, {"domain": {"id": "1"}}]),
    ("(vif (idx 0) (ip 10.0.0.1) (ip 10.0.0.2))",  # a name twice: an array of fields
     {"vif": [{"idx": "0"}, {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}),
    ("(x (1 2) a)", {"x": [{"1": "2"}, "a"]}),
    ("(x ((a)) (b))", {"x": [[["a"]], {"b": []}]}),
])
def test_records_are_objects_and_lists_are_arrays(text: str, mapped: object) -> None:
    assert to_json(sxp.parse(text)) == mapped
    assert from_json(mapped) == sxp.parse(text)


def test_atoms_that_are_not_strings_map_as_sxp_prints_them() -> None:
    assert to_json(["cpu_time", 1.5, 3, None]) == ["cpu_time", "1.5", "3", "None"]


def test_an_error_is_one_member_named_error() -> None:
    assert json.loads(error("invalid domain:x")) == {"error": "invalid domain:x"}


@pytest.mark.parametrize("bad", [{"a": "1", "b": "2"}, 5, None, {"a": 5}])
def test_json_of_no_sxp_value_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        from_json(bad)
