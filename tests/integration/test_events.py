"""The event log over HTTP against a real xend: long-poll, stream, resume, notify URLs."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError
from xend_actors.events.event import Event
from xend_actors.web.event import MAX_WATCHERS

pytestmark = pytest.mark.integration


def vm(name: str) -> str:
    return f"(vm (name {name}) (memory 16) (image (linux (kernel /boot/vmlinuz-sim))))"


def create(home: XendHome, name: str) -> str:
    """Create a domain over HTTP; its id."""
    with home.unix_http() as http:
        reply = http.post("/xend/domain/", data={"op": "create", "config": vm(name)})
    assert reply.status_code == 201, reply.text
    return sxp.child_value(sxp.parse(reply.text), "id")


def poll(http: httpx.Client, since: int, timeout: int = 0) -> list[Event]:
    reply = http.get("/xend/event/", params={"since": since, "timeout": timeout})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/sxp"
    return [Event.from_record(record) for record in sxp.parse(reply.text)]


def events_until(home: XendHome, since: int, name: str, value: sxp.Value) -> list[Event]:
    """Every event after ``since`` up to the one called ``name`` with ``value``."""
    seen: list[Event] = []
    deadline = time.monotonic() + 30
    with home.unix_http() as http:
        while not any(e.name == name and e.value == value for e in seen):
            assert time.monotonic() < deadline, f"no {name} {value} in {seen}"
            seen += poll(http, seen[-1].seq if seen else since, timeout=5)
    return seen


def numbers(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


# --- long-poll -------------------------------------------------------------------------------


def test_event_dir_still_lists_nothing_without_since(shared_home: XendHome) -> None:
    assert shared_home.get_sxp("/xend/event/") == ["ls"]


def test_long_poll_gives_old_events_at_once_then_waits_for_the_next(
    shared_home: XendHome,
) -> None:
    with shared_home.unix_http() as http:
        old = poll(http, 0)
        assert old[0].seq == 1 and "xend.start" in [event.name for event in old]
        assert numbers(old) == list(range(1, len(old) + 1))
        last = old[-1].seq

        with ThreadPoolExecutor(1) as pool, shared_home.unix_http() as waiter:
            started = time.monotonic()
            waiting = pool.submit(poll, waiter, last, 30)
            began = time.monotonic()
            assert poll(http, last, timeout=1) == []  # nothing new: () after the timeout
            assert time.monotonic() - began >= 1
            domid = create(shared_home, "x")
            new = waiting.result(timeout=30)
            assert time.monotonic() - started < 30  # woken by the event, not the timeout
        assert new[0].seq == last + 1
        assert numbers(new) == list(range(last + 1, last + 1 + len(new)))
    assert events_until(shared_home, last, "xend.domain.create", ["x", domid])


def test_long_poll_arguments_are_checked(shared_home: XendHome) -> None:
    with shared_home.unix_http() as http:
        assert http.get("/xend/event/", params={"since": "-1"}).status_code == 400
        reply = http.get("/xend/event/", params={"since": "soon"})
        assert reply.status_code == 400
        assert sxp.name(sxp.parse(reply.text)) == "xend.err"


def test_client_long_poll(shared_home: XendHome) -> None:
    with XendClient(unix_path=shared_home.unix_path) as client:
        records = client.xend_events(0, 0)
        assert "xend.start" in [Event.from_record(r).name for r in records]
        assert client.xend_events(len(records), 0) == []


# --- the stream ------------------------------------------------------------------------------


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The events of a text/event-stream, each as its fields; comments skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


def test_stream_sends_events_with_ids_and_resumes_after_last_event_id(
    shared_home: XendHome,
) -> None:
    with shared_home.unix_http() as http:
        last = poll(http, 0)[-1].seq
        accept = {"Accept": "text/event-stream"}
        with http.stream("GET", "/xend/event/", params={"since": 0, "timeout": 20},
                         headers=accept) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            stream = sse_events(reply.iter_lines())
            old = [next(stream) for _ in range(last)]
            assert [int(e["id"]) for e in old] == list(range(1, last + 1))
            assert any(e["event"] == "xend.start" and e["data"] == "0" for e in old)
            domid = create(shared_home, "s1")
            for fields in stream:
                if fields["event"] == "xend.domain.create":
                    break
            assert int(fields["id"]) > last
            assert sxp.parse(fields["data"]) == ["s1", domid]

        resume = {**accept, "Last-Event-ID": str(last)}
        with http.stream("GET", "/xend/event/", params={"since": 0, "timeout": 5},
                         headers=resume) as reply:
            first = next(sse_events(reply.iter_lines()))
        assert int(first["id"]) == last + 1


def test_waiting_clients_are_bounded(running_xend: XendHome) -> None:
    with contextlib.ExitStack() as open_streams:
        for _ in range(MAX_WATCHERS):
            http = open_streams.enter_context(running_xend.unix_http())
            reply = open_streams.enter_context(http.stream(
                "GET", "/xend/event/", params={"timeout": 60},
                headers={"Accept": "text/event-stream"}))
            assert reply.status_code == 200
        with running_xend.unix_http() as http:
            refused = http.get("/xend/event/", params={"since": 0})
        assert refused.status_code == 503
        assert sxp.name(sxp.parse(refused.text)) == "xend.err"


# --- resume across a restart -----------------------------------------------------------------


def check_resumed(home: XendHome, before: list[Event]) -> None:
    """After a restart: numbering goes on after ``before``, nothing lost or repeated."""
    last = before[-1].seq
    domid = create(home, "after")
    after = events_until(home, last, "xend.domain.create", ["after", domid])
    assert numbers(after) == list(range(last + 1, last + 1 + len(after)))
    assert "xend.start" in [event.name for event in after]
    with home.unix_http() as http:
        everything = poll(http, 0)
    assert numbers(everything) == list(range(1, len(everything) + 1))
    assert everything[: len(before)] == before
    assert everything[len(before) : len(before) + len(after)] == after


def test_events_resume_across_stop_and_start_with_none_lost_or_repeated(
    running_xend: XendHome,
) -> None:
    domid = create(running_xend, "before")
    before = events_until(running_xend, 0, "xend.domain.create", ["before", domid])
    assert running_xend.xend("stop").returncode == 0
    assert running_xend.xend("start").returncode == 0
    check_resumed(running_xend, before)


def test_events_resume_after_kill_9_with_none_lost_or_repeated(running_xend: XendHome) -> None:
    domid = create(running_xend, "before")
    before = events_until(running_xend, 0, "xend.domain.create", ["before", domid])
    os.kill(int(running_xend.pid_file.read_text()), signal.SIGKILL)
    wait_for(lambda: running_xend.xend("status").returncode == 3, what="xend to be dead")
    started = running_xend.xend("start")
    assert started.returncode == 0, started.stderr
    check_resumed(running_xend, before)


# --- notify URLs -----------------------------------------------------------------------------


class Receiver:
    """A local HTTP server that records what is POSTed to it; can fail the first few."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[str, str]] = []  # (content type, body) of each POST
        self.failures_left = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with lock:
                    receiver.posts.append((self.headers["Content-Type"], body))
                    failing = receiver.failures_left > 0
                    receiver.failures_left -= failing
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[Event]:
        return [Event.from_record(sxp.parse(body)) for _type, body in list(self.posts)]

    def got(self, name: str, value: sxp.Value) -> bool:
        return any(e.name == name and e.value == value for e in self.events())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(fail_first: int = 0) -> Receiver:
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_notify_posts_every_event_to_the_url_and_survives_a_restart(
    running_xend: XendHome, receiver: Callable[..., Receiver],
) -> None:
    hook = receiver(fail_first=1)  # the first POST fails: xend tries again
    with XendClient(unix_path=running_xend.unix_path) as client:
        assert client.xend_node_notify(hook.url) == "0"
        assert client.xend_node_notify(hook.url) == "0"  # again: still one registration
        assert client.xend_node_notify_urls() == [hook.url]
    domid = create(running_xend, "n1")
    wait_for(lambda: hook.got("xend.domain.create", ["n1", domid]), what="the create event")
    content_type, first_body = hook.posts[0]
    assert content_type == "application/sxp"
    assert hook.posts[1][1] == first_body  # the failed one, sent again
    delivered = hook.events()[1:]
    assert numbers(delivered) == sorted(set(numbers(delivered)))  # in order, each once

    assert running_xend.xend("restart").returncode == 0
    with XendClient(unix_path=running_xend.unix_path) as client:
        assert client.xend_node_notify_urls() == [hook.url]
        # xend.start of the first run came before the URL was registered.
        wait_for(lambda: hook.got("xend.start", "0"), what="xend.start posted")
        assert client.xend_node_unnotify(hook.url) == "0"
        assert client.xend_node_notify_urls() == []
        with pytest.raises(XendError) as gone:
            client.xend_node_unnotify(hook.url)
        assert gone.value.status == 404
    domid = create(running_xend, "n2")
    events_until(running_xend, 0, "xend.domain.create", ["n2", domid])
    assert not hook.got("xend.domain.create", ["n2", domid])


def test_notify_urls_are_limited_by_hosts_allow(xend_home: Callable[..., XendHome]) -> None:
    home = xend_home("(xend-hosts-allow '^127[.]0[.]0[.]1$ ^localhost$')")
    home.start()
    with home.unix_http() as http:
        def notify(url: str) -> httpx.Response:
            return http.post("/xend/node", data={"op": "notify", "url": url})

        refused = notify("http://192.0.2.1:8080/hook")
        assert refused.status_code == 403
        assert sxp.parse(refused.text) == [
            "xend.err", "notify URL http://192.0.2.1:8080/hook is not allowed by xend-hosts-allow"]
        for bad in ("https://127.0.0.1/hook", "http://example.com/hook", "ftp://127.0.0.1/",
                    "http://127.0.0.1:99999/"):
            assert notify(bad).status_code == 400, bad
        assert notify("http://localhost:9/hook").status_code == 200
        assert sxp.parse(http.get("/xend/node/notify").text) == ["http://localhost:9/hook"]
