"""The event bus: patterns, fan-out (facts §11.1), its persistent log; notify URL rules."""

from __future__ import annotations

import queue
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.processes import wait_for
from xend_actors import sxp
from xend_actors.errors import BadRequest, Forbidden
from xend_actors.events.bus import EventBus, QueueSubscriber
from xend_actors.events.event import Event, matches
from xend_actors.events.log import EventLog
from xend_actors.events.notify import check_url


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("xend.domain.create", "xend.domain.create", True),
    ("xend.domain.create", "xend.domain.destroy", False),
    ("xend.domain.?", "xend.domain.create", True),
    ("xend.domain.?", "xend.domain", False),
    ("xend.domain.?", "xend.domain.create.x", False),
    ("xend.domain.*", "xend.domain", True),
    ("xend.domain.*", "xend.domain.create", True),
    ("xend.domain.*", "xend.domainx", False),
    ("xend.*", "xend.console.connect", True),
    ("*", "anything.at.all", True),
    ("xend.domain.create.*", "xend.domain.create", True),
])
def test_pattern_matching(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.fixture
def bus() -> Iterator[pykka.ActorProxy]:
    ref = EventBus.start()
    yield ref.proxy()
    ref.stop()


def take(subscriber: QueueSubscriber) -> Event:
    return subscriber.events.get(timeout=5)


def test_subscribers_get_matching_events_in_order_with_sequence(
    bus: pykka.ActorProxy,
) -> None:
    domains, everything = QueueSubscriber(), QueueSubscriber()
    bus.subscribe(domains, "xend.domain.*").get(timeout=5)
    bus.subscribe(everything, "*").get(timeout=5)
    bus.publish("xend.start", "0")
    bus.publish("xend.domain.create", ["vm1", "1"])
    first, second = take(everything), take(everything)
    assert (first.name, second.name) == ("xend.start", "xend.domain.create")
    assert second.seq == first.seq + 1
    created = take(domains)
    assert created.sxpr() == ["event", "xend.domain.create", ["vm1", "1"]]
    with pytest.raises(queue.Empty):
        domains.events.get(timeout=0.2)


def test_subscribe_replaces_and_unsubscribe_stops(bus: pykka.ActorProxy) -> None:
    listener = QueueSubscriber()
    bus.subscribe(listener, "a.*").get(timeout=5)
    bus.subscribe(listener, "b").get(timeout=5)
    bus.publish("a.x", "1")
    bus.publish("b", "2")
    assert take(listener).name == "b"
    bus.unsubscribe(listener).get(timeout=5)
    bus.publish("b", "3")
    assert bus.last_seq().get(timeout=5) == 3
    assert listener.events.empty()


def test_a_dead_actor_subscriber_is_dropped(bus: pykka.ActorProxy) -> None:
    class Sink(pykka.ThreadingActor):
        pass

    dead = Sink.start()
    dead.stop()
    alive = QueueSubscriber()
    bus.subscribe(dead, "*").get(timeout=5)
    bus.subscribe(alive, "*").get(timeout=5)
    bus.publish("x", "1")
    bus.publish("y", "2")
    assert [take(alive).name, take(alive).name] == ["x", "y"]


# --- the log -----------------------------------------------------------------------------


def test_record_round_trips_any_value() -> None:
    event = Event(7, "xend.domain.create", ["vm 1", "line\nbreak", ["nested", "'q'"]], 1.25)
    line = sxp.show(event.record())
    assert "\n" not in line
    assert Event.from_record(sxp.parse(line)) == event


def test_numbering_and_events_continue_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events"
    first = EventBus.start(path)
    first.proxy().publish("xend.start", "0")
    first.proxy().publish("xend.domain.create", ["vm1", "1"])
    first.stop()

    again = EventBus.start(path).proxy()
    try:
        assert again.last_seq().get(timeout=5) == 2
        listener = QueueSubscriber()
        again.subscribe(listener, "*").get(timeout=5)
        again.publish("xend.start", "0")
        assert take(listener).seq == 3
        events = again.since(0).get(timeout=5)
    finally:
        again.stop()
    assert [(e.seq, e.name, e.value) for e in events] == [
        (1, "xend.start", "0"), (2, "xend.domain.create", ["vm1", "1"]), (3, "xend.start", "0")]
    assert len(path.read_text().splitlines()) == 3


def test_an_event_is_on_disk_before_anyone_sees_it(tmp_path: Path) -> None:
    ref = EventBus.start(tmp_path / "events")
    try:
        listener = QueueSubscriber()
        ref.proxy().subscribe(listener, "*").get(timeout=5)
        ref.proxy().publish("a", "1")
        take(listener)
        assert "(name a)" in (tmp_path / "events").read_text()
    finally:
        ref.stop()


def test_log_is_compacted_to_the_last_events(tmp_path: Path) -> None:
    path = tmp_path / "events"
    log = EventLog(path, keep=5)
    for seq in range(1, 23):
        log.append([Event(seq, "tick", str(seq), float(seq))])
        assert len(path.read_text().splitlines()) <= 10
    assert [e.seq for e in log.since(0, 100)] == [18, 19, 20, 21, 22]
    log.close()
    reopened = EventLog(path, keep=5)
    assert reopened.last_seq == 22
    assert [e.value for e in reopened.since(19, 100)] == ["20", "21", "22"]
    assert [e.seq for e in reopened.since(0, 2)] == [18, 19]
    reopened.close()


def test_log_is_also_bounded_in_bytes(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events", keep=100, keep_bytes=1000)
    log.append([Event(seq, "big", "x" * 300, 0.0) for seq in range(1, 6)])
    assert [e.seq for e in log.since(0, 100)] == [4, 5]
    log.append([Event(6, "huge", "y" * 5000, 0.0)])
    assert [e.seq for e in log.since(0, 100)] == [6]  # the newest always stays
    log.close()


def test_a_torn_or_garbled_line_is_skipped_and_cleaned_up(tmp_path: Path) -> None:
    path = tmp_path / "events"
    log = EventLog(path)
    log.append([Event(1, "a", "1", 1.0), Event(2, "b", "2", 2.0)])
    log.close()
    with path.open("a") as out:
        out.write("(event (seq 2) (time 3.0) (name dup) (value 0))\nnot sxp (\n(event (seq 3) (ti")
    reopened = EventLog(path)
    assert reopened.last_seq == 2
    reopened.append([Event(3, "c", "3", 3.0)])
    reopened.close()
    again = EventLog(path)
    assert [(e.seq, e.name) for e in again.since(0, 10)] == [(1, "a"), (2, "b"), (3, "c")]
    again.close()


def test_a_full_queue_subscriber_drops_instead_of_blocking_the_bus(
    bus: pykka.ActorProxy,
) -> None:
    small = QueueSubscriber(queue.Queue(maxsize=2))
    bus.subscribe(small, "*").get(timeout=5)
    for n in range(5):
        bus.publish("x", str(n))
    wait_for(lambda: small.dropped == 3, what="three events dropped")
    assert bus.since(0).get(timeout=5)[-1].seq == 5  # the bus went on
    assert [small.events.get_nowait().value for _ in range(2)] == ["0", "1"]


# --- notify URLs -------------------------------------------------------------------------


LOOPBACK_ONLY = (re.compile(r"127\.0\.0\.1"), re.compile("localhost"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/",
                                 "http://127.0.0.1"])
def test_notify_url_allowed(url: str) -> None:
    assert check_url(url, LOOPBACK_ONLY) == url


def test_notify_url_anywhere_when_hosts_allow_is_empty() -> None:
    assert check_url("http://192.0.2.1:80/x", ()) == "http://192.0.2.1:80/x"


def test_notify_url_outside_hosts_allow_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="not allowed by xend-hosts-allow"):
        check_url("http://192.0.2.1/x", LOOPBACK_ONLY)


@pytest.mark.parametrize(("url", "why"), [
    ("https://127.0.0.1/", "expected http://"),
    ("http://example.com/", "IP address or localhost"),
    ("http://127.0.0.1:70000/", "bad notify URL"),
    ("http://user:pw@127.0.0.1/", "expected http://"),
    ("127.0.0.1:80", "expected http://"),
    ("http://127.0.0.1/" + "x" * 2000, "longer than"),
])
def test_notify_url_malformed(url: str, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        check_url(url, ())


def test_events_that_cannot_be_written_are_counted_kept_and_written_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "db"
    log = EventLog(folder / "events")
    log.close()  # the next append rewrites the file ...
    shutil.rmtree(folder)
    folder.write_text("a file where the folder was")  # ... which fails, even for root
    log.append([Event(1, "xend.start", "0", 1.0)])
    log.append([Event(2, "xend.domain.create", ["vm1", "1"], 2.0)])
    assert log.unwritten == 2
    assert [e.seq for e in log.since(0, 10)] == [1, 2]
    assert len([r for r in caplog.records if "Cannot write the event log" in r.message]) == 1

    folder.unlink()
    folder.mkdir()
    log.append([Event(3, "xend.start", "0", 3.0)])
    log.close()
    assert log.unwritten == 0
    assert "2 events were written late" in caplog.text
    assert [e.seq for e in EventLog(folder / "events").since(0, 10)] == [1, 2, 3]


@given(name=st.text(min_size=1, max_size=20),
       value=st.recursive(st.text(max_size=8), lambda items: st.lists(items, max_size=4),
                          max_leaves=12),
       when=st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_an_event_shown_from_its_shown_value_is_the_event_shown_whole(
        name: str, value: sxp.Value, when: float) -> None:
    # The bus shows each value once, for xend's log and the event log's line: that
    # line must be the one a reader parses back (and the one an older xend wrote).
    event = Event(7, name, value, when)
    assert event.record_shown(sxp.show(value)) == sxp.show(event.record())
