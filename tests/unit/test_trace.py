"""Tracing xend's calls: this thread, new threads and running actors; off means off."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from xend_actors import sxp, trace
from xend_actors.trace import TracedActor


class Echo(TracedActor):
    def show(self, value: sxp.Value) -> str:
        return sxp.show(value)


class Plain(pykka.ThreadingActor):
    def show(self, value: sxp.Value) -> str:
        return sxp.show(value)


@pytest.fixture
def trace_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "xend.trace"
    trace.stop()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_calls_in_this_thread_new_threads_and_actors_are_traced(trace_file: Path) -> None:
    echo = Echo.start()
    try:
        trace.start(trace_file)
        sxp.show(["here"])
        worker = threading.Thread(target=sxp.show, args=(["there"],), name="worker")
        worker.start()
        worker.join()
        assert echo.proxy().show(["actor"]).get(timeout=10) == "(actor)"
        trace.stop()
    finally:
        echo.stop()
    threads = {line.split("[")[1].split("]")[0] for line in lines(trace_file)
               if " xend_actors.sxp:show:" in line}
    assert threading.current_thread().name in threads
    assert "worker" in threads
    assert any(name.startswith("Echo-") for name in threads)


def test_actors_that_are_not_traced_actors_are_left_alone(trace_file: Path) -> None:
    plain = Plain.start()
    try:
        trace.start(trace_file)
        plain.proxy().show(["x"]).get(timeout=10)
        trace.stop()
    finally:
        plain.stop()
    assert not any("[Plain-" in line for line in lines(trace_file))


def test_exceptions_are_traced_with_their_message(trace_file: Path) -> None:
    trace.start(trace_file)
    with pytest.raises(sxp.ParseError):
        sxp.parse("(a")
    trace.stop()
    assert any(" xend_actors.sxp:" in line and "exception ParseError: line 1, column 3" in line
               for line in lines(trace_file))


def test_the_trace_module_and_other_packages_are_not_traced(trace_file: Path) -> None:
    trace.start(trace_file)
    sxp.show(["x"])
    trace.stop()
    modules = {line.split("] ")[1].split(":")[0] for line in lines(trace_file)}
    assert modules == {"xend_actors.sxp"}


def test_stopping_takes_the_trace_function_out_and_the_file_stops_growing(
    trace_file: Path,
) -> None:
    trace.start(trace_file)
    sxp.show(["x"])
    trace.stop()
    size = trace_file.stat().st_size
    sxp.show(["y"])
    assert sys.gettrace() is None
    assert trace_file.stat().st_size == size


def test_tracing_stops_by_itself_at_the_size_limit(trace_file: Path) -> None:
    trace.start(trace_file, limit=2000)
    for _ in range(100):
        sxp.show(["x", "y"])
    assert not trace.is_on()
    assert sys.gettrace() is None
    assert lines(trace_file)[-1] == "tracing stopped: the trace file reached 2000 bytes"
    assert trace_file.stat().st_size < 2000 + 200


def test_start_truncates_the_file(trace_file: Path) -> None:
    trace_file.write_text("old\n" * 1000)
    trace.start(trace_file)
    trace.stop()
    assert "old" not in trace_file.read_text()
