"""The torture run, two minutes of it: clients, kill -9 storms, simhv kills and a full
dbroot against two xends (``bench/torture.py``), with a fixed seed. Nothing acknowledged
is lost, the store matches the hypervisor, nothing is orphaned, no event is lost or
repeated, no name is doubled or lost, and xend stays flat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TORTURE = Path(__file__).resolve().parents[2] / "bench" / "torture.py"


def test_two_minutes_of_torture_find_no_violation() -> None:
    disk_full = [] if os.geteuid() == 0 else ["--no-disk-full"]  # a tmpfs dbroot needs root
    run = subprocess.run(
        [sys.executable, str(TORTURE), "--minutes", "2", "--round-seconds", "20",
         "--kill-every", "6", "--clients", "4", "--domains", "6", "--seed", "15", *disk_full],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    report = run.stdout[run.stdout.find("\n\n"):] + run.stderr[-3000:]
    assert "restarts survived 0," not in report, report  # the run did kill and restart xend
    assert run.returncode == 0 and "violations: 0 " in report, report
