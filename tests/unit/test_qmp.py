"""qmp.Qmp, the connection to a qemu monitor, against a scripted monitor on a Unix socket
(a thread, no qemu): commands get their own replies, events arrive in order, and a late
or a vanished qemu is an error that says which command and which monitor."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from xend_actors.errors import HypervisorError, Timeout
from xend_actors.hypervisor.qemu.qmp import Command, Qmp, QmpError
from xend_actors.hypervisor.qemu.qmp_protocol import Event

WAIT = 10.0  # for what does come: only a broken connection takes this long
GREETING = {"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}},
                    "capabilities": ["oob"]}}


class Monitor:
    """A scripted qemu monitor: greets, takes capabilities, then hands the test each
    command it gets; the test answers, sends events, or hangs up."""

    def __init__(self, path: Path, greeting: Any = GREETING) -> None:
        self.path = path
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._greeting = greeting
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        self._conn = conn
        self._connected.set()
        self.send(self._greeting)
        with conn.makefile("rb") as lines, contextlib.suppress(OSError):  # xend hung up
            for line in lines:
                request = json.loads(line)
                if request == {"execute": "qmp_capabilities"}:
                    self.send({"return": {}})
                else:
                    self.commands.put(request)

    def send(self, message: Any) -> None:
        assert self._conn is not None
        self._conn.sendall(json.dumps(message).encode() + b"\r\n")

    def next_command(self) -> dict[str, Any]:
        return self.commands.get(timeout=WAIT)

    def hang_up(self) -> None:
        assert self._connected.wait(WAIT) and self._conn is not None
        self._conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(WAIT)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)
            self._thread.join(WAIT)
            self._conn.close()
        self._listener.close()


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qmp-") as tmp:  # short: a socket path
        yield Path(tmp)


@pytest.fixture
def monitor(folder: Path) -> Iterator[Monitor]:
    monitor = Monitor(folder / "qmp.sock")
    yield monitor
    monitor.close()


class Seen:
    """What the connection tells its owner: events, and that it closed."""

    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.closed = 0
        self.all_closed = threading.Event()

    def on_event(self, event: Event) -> None:
        self.events.put(event)

    def on_close(self) -> None:
        self.closed += 1
        self.all_closed.set()


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def qmp(monitor: Monitor, seen: Seen) -> Iterator[Qmp]:
    qmp = Qmp.connect(monitor.path, timeout=WAIT, on_event=seen.on_event,
                      on_close=seen.on_close)
    yield qmp
    qmp.close()


def test_commands_get_their_own_replies_and_events_arrive_in_order(
        qmp: Qmp, monitor: Monitor, seen: Seen) -> None:
    with ThreadPoolExecutor(2) as pool:
        status = pool.submit(qmp.execute, "query-status")
        first = monitor.next_command()
        balloon = pool.submit(qmp.execute, "balloon", {"value": 1 << 28})
        second = monitor.next_command()
        assert first == {"execute": "query-status", "id": first["id"]}
        assert second == {"execute": "balloon", "id": second["id"],
                          "arguments": {"value": 1 << 28}}
        monitor.send({"event": "STOP", "data": {}})
        monitor.send({"return": {}, "id": second["id"]})  # the second is answered first
        monitor.send({"event": "RESUME"})
        monitor.send({"return": {"status": "running"}, "id": first["id"]})
        assert balloon.result(WAIT) == {}
        assert status.result(WAIT) == {"status": "running"}
    assert [seen.events.get(timeout=WAIT).name for _ in range(2)] == ["STOP", "RESUME"]


def test_commands_sent_together_all_go_before_an_answer_and_the_first_error_is_raised(
        qmp: Qmp, monitor: Monitor) -> None:
    """``execute_all`` sends every command at once (one round trip for a migration's
    four), waits for every answer, then raises the first refusal."""
    commands = [Command("migrate-set-capabilities", {"capabilities": []}),
                Command("getfd", {"fdname": "x"}), Command("migrate", {"uri": "fd:x"})]
    with ThreadPoolExecutor(1) as pool:
        together = pool.submit(qmp.execute_all, commands)
        got = [monitor.next_command() for _ in commands]  # none answered yet
        assert [c["execute"] for c in got] == ["migrate-set-capabilities", "getfd", "migrate"]
        monitor.send({"return": {}, "id": got[0]["id"]})
        monitor.send({"error": {"class": "GenericError", "desc": "no such fd"},
                      "id": got[1]["id"]})
        assert not together.done()  # the last is still in flight
        monitor.send({"return": {}, "id": got[2]["id"]})
        with pytest.raises(QmpError, match="qemu refused getfd: no such fd"):
            together.result(WAIT)
    with ThreadPoolExecutor(1) as pool:
        together = pool.submit(qmp.execute_all, commands[:2])
        got = [monitor.next_command() for _ in range(2)]
        for command, answer in zip(got, ({}, {"fd": 1}), strict=True):
            monitor.send({"return": answer, "id": command["id"]})
        assert together.result(WAIT) == [{}, {"fd": 1}]


def test_qemus_error_is_raised_with_its_class_and_sentence(qmp: Qmp, monitor: Monitor) -> None:
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(qmp.execute, "device_del", {"id": "nic-0"})
        request = monitor.next_command()
        monitor.send({"id": request["id"], "error": {
            "class": "DeviceNotFound", "desc": "Device 'nic-0' not found"}})
        with pytest.raises(QmpError, match=r"^qemu refused device_del: Device 'nic-0' not "
                                           r"found$") as refused:
            reply.result(WAIT)
    assert refused.value.error_class == "DeviceNotFound"


def test_a_late_reply_is_a_timeout_and_the_monitor_goes_on(qmp: Qmp, monitor: Monitor) -> None:
    with pytest.raises(Timeout, match=rf"^qemu did not answer query-migrate within 0\.05 s "
                                      rf"\(monitor {monitor.path}\)$"):
        qmp.execute("query-migrate", timeout=0.05)
    late = monitor.next_command()
    with ThreadPoolExecutor(1) as pool:
        status = pool.submit(qmp.execute, "query-status")
        request = monitor.next_command()
        monitor.send({"return": {"status": "late"}, "id": late["id"]})  # dropped
        monitor.send({"return": {"status": "paused"}, "id": request["id"]})
        assert status.result(WAIT) == {"status": "paused"}
    assert not qmp.closed


def test_qemu_gone_fails_the_waiting_call_and_every_later_one(
        qmp: Qmp, monitor: Monitor, seen: Seen) -> None:
    gone = f"qemu's monitor at {monitor.path} is closed \\(qemu exited\\?\\); cannot run"
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(qmp.execute, "query-status")
        monitor.next_command()
        monitor.hang_up()
        with pytest.raises(HypervisorError, match=f"^{gone} query-status$"):
            waiting.result(WAIT)
    assert seen.all_closed.wait(WAIT) and seen.closed == 1
    assert qmp.closed
    with pytest.raises(HypervisorError, match=f"^{gone} cont$"):
        qmp.execute("cont")


def test_letting_go_wakes_the_waiting_call(qmp: Qmp, monitor: Monitor, seen: Seen) -> None:
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(qmp.execute, "query-status")
        monitor.next_command()
        qmp.close()
        with pytest.raises(HypervisorError, match=r"is closed .* cannot run query-status$"):
            waiting.result(WAIT)
    assert seen.all_closed.wait(WAIT) and seen.closed == 1


def test_a_socket_that_does_not_greet_as_qmp_is_refused(folder: Path) -> None:
    monitor = Monitor(folder / "other.sock", greeting={"hello": "world"})
    try:
        with pytest.raises(HypervisorError, match=r"other\.sock is not a QMP monitor \(it said "
                                                  r"\{'hello': 'world'\}\)"):
            Qmp.connect(monitor.path, timeout=WAIT)
    finally:
        monitor.close()


def test_a_command_waited_until_its_event_returns_on_the_event_and_the_late_answer_is_dropped(
        monitor: Monitor, folder: Path) -> None:
    resumed = threading.Event()

    def on_event(event: Event) -> None:
        if event.name == "RESUME":
            resumed.set()

    with contextlib.closing(Qmp.connect(monitor.path, timeout=WAIT, on_event=on_event)) as qmp:
        with ThreadPoolExecutor(1) as pool:
            cont = pool.submit(qmp.execute, "cont", until=resumed)
            command = monitor.next_command()
            monitor.send({"event": "RESUME", "data": {},
                          "timestamp": {"seconds": 1, "microseconds": 0}})
            assert cont.result(WAIT) is None  # before qemu answers
            monitor.send({"return": {}, "id": command["id"]})
        # The dropped answer is no one's: the next command gets its own.
        with ThreadPoolExecutor(1) as pool:
            status = pool.submit(qmp.execute, "query-status")
            command = monitor.next_command()
            monitor.send({"return": {"status": "running"}, "id": command["id"]})
            assert status.result(WAIT) == {"status": "running"}


def test_a_command_waited_until_an_event_that_never_comes_gets_its_answer_or_error(
        qmp: Qmp, monitor: Monitor) -> None:
    never = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        cont = pool.submit(qmp.execute, "cont", until=never)
        command = monitor.next_command()
        monitor.send({"error": {"class": "GenericError", "desc": "it has shut down"},
                      "id": command["id"]})
        with pytest.raises(QmpError, match="it has shut down"):
            cont.result(WAIT)
        late = pool.submit(qmp.execute, "cont", timeout=0.05, until=threading.Event())
        monitor.next_command()
        with pytest.raises(Timeout, match=r"did not answer cont within 0\.05 s"):
            late.result(WAIT)
