"""Event patterns and fan-out of the event bus (facts §11.1)."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pykka
import pytest

from xend_actors.events import Event, EventBus, QueueSubscriber, matches


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
