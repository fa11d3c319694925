"""The log file, its rotation, the stderr copy and the debug log redirect."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xend_actors import logs

log = logging.getLogger("xend")

FILE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d xend\] INFO \(test_logs:\d+\) hello$")


@pytest.fixture(autouse=True)
def restore_logging():
    """Give each test the root logger as it found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in logs.NOISY_LOGGERS}
    yield
    logs.set_stderr(False)
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_record_lands_in_the_file_in_xend_format(tmp_path: Path) -> None:
    logfile = tmp_path / "log" / "xend.log"
    logs.setup_logging(logfile)
    log.info("hello")
    assert len(lines(logfile)) == 1
    assert FILE_LINE.match(lines(logfile)[0])


def test_other_loggers_land_in_the_file_too(tmp_path: Path) -> None:
    logfile = tmp_path / "xend.log"
    logs.setup_logging(logfile)
    logging.getLogger("some.library").warning("from a library")
    assert re.search(r"\] WARNING \(test_logs:\d+\) from a library$", lines(logfile)[0])


def test_records_below_the_level_are_dropped(tmp_path: Path) -> None:
    logfile = tmp_path / "xend.log"
    logs.setup_logging(logfile, "info")
    log.debug("detail")
    log.info("hello")
    logging.getLogger("werkzeug").debug("GET / 200")
    assert len(lines(logfile)) == 1
    assert FILE_LINE.match(lines(logfile)[0])


def test_noisy_libraries_are_quiet_at_debug_level(tmp_path: Path) -> None:
    logfile = tmp_path / "xend.log"
    logs.setup_logging(logfile, "DEBUG")
    logging.getLogger("werkzeug").debug("per-request chatter")
    logging.getLogger("werkzeug").info("GET / 200")
    logging.getLogger("werkzeug").warning("bad request line")
    logging.getLogger("pykka").info("actor started")
    log.debug("xend detail")
    text = logfile.read_text()
    assert "chatter" not in text
    assert "GET / 200" not in text  # no access log
    assert "bad request line" in text
    assert "actor started" in text
    assert "xend detail" in text


def test_the_file_rotates_at_one_mib_keeping_five_backups(tmp_path: Path) -> None:
    logfile = tmp_path / "xend.log"
    logs.setup_logging(logfile)
    line = "x" * 1000
    for _ in range(7 * 1024):
        log.info(line)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["xend.log"] + [f"xend.log.{n}" for n in range(1, 6)]
    assert all(path.stat().st_size <= logs.MAX_BYTES for path in tmp_path.iterdir())


def test_setting_up_twice_writes_each_record_once(tmp_path: Path) -> None:
    logs.setup_logging(tmp_path / "first.log", to_stderr=True)
    logs.setup_logging(tmp_path / "second.log")
    log.info("hello")
    assert lines(tmp_path / "first.log") == []
    assert len(lines(tmp_path / "second.log")) == 1


def test_stderr_copy_can_be_turned_on_and_off(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging(tmp_path / "xend.log")
    log.info("before")
    logs.set_stderr(True)
    log.info("during")
    logs.set_stderr(False)
    log.info("after")
    err = capfd.readouterr().err
    assert re.search(r"^\[xend\] INFO \(test_logs:\d+\) during$", err, re.MULTILINE)
    assert "before" not in err
    assert "after" not in err
    assert len(lines(tmp_path / "xend.log")) == 3


def test_setup_can_copy_to_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging(tmp_path / "xend.log", to_stderr=True)
    log.warning("look")
    assert "[xend] WARNING (test_logs:" in capfd.readouterr().err


def test_std_streams_go_to_the_debug_log(tmp_path: Path) -> None:
    debug_log = tmp_path / "log" / "xend-debug.log"
    debug_log.parent.mkdir()
    debug_log.write_text("earlier\n")
    program = f"""
import os, sys
from pathlib import Path
from xend_actors.logs import redirect_std_streams
redirect_std_streams(Path({str(debug_log)!r}))
print("to stdout")
os.write(2, b"to fd 2\\n")
sys.stderr.write("to stderr\\n")
print("unflushed")
os._exit(0)
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    assert lines(debug_log) == ["earlier", "to stdout", "to fd 2", "to stderr", "unflushed"]
