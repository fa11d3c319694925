"""A vif script that holds still on cue, so a test can kill xend at a precise point of a
hot-plug or a destroy, and a request sent aside whose answer never comes.

The script does the shipped ``vif-bridge``'s work, then, while its folder holds
``hold-<op>``, writes its pid to ``held`` and sleeps until killed: xend waits on it,
with the script's work done and the next step not begun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.processes import wait_for

VIF_BRIDGE = Path(__file__).resolve().parents[2] / "netscripts" / "vif-bridge"

HOLDING_SCRIPT = """#!/usr/bin/env python3
import os, subprocess, sys, time
from pathlib import Path
folder = Path(__file__).parent
done = subprocess.run([sys.executable, {real!r}, *sys.argv[1:]])
if (folder / f"hold-{{sys.argv[1]}}").exists():
    (folder / "held").write_text(str(os.getpid()))
    while True:
        time.sleep(60)
sys.exit(done.returncode)
"""


class Holder:
    """The holding vif script in ``folder``; ``hold(op)`` makes its next ``op`` hold."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.script = folder / "vif-hold"
        self.script.write_text(HOLDING_SCRIPT.format(real=str(VIF_BRIDGE)))
        self.held = folder / "held"

    def hold(self, op: str) -> None:
        (self.folder / f"hold-{op}").touch()

    def wait_held(self) -> None:
        wait_for(self.held.exists, 60, "the vif script holding")

    def let_go(self) -> None:
        """No more holding; the held script (orphaned by xend's kill) killed."""
        for hold in self.folder.glob("hold-*"):
            hold.unlink()
        if self.held.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(self.held.read_text()), signal.SIGKILL)
            self.held.unlink()


    def kill_during(self, op: str, request: Callable[[], object], kill: Callable[[], None],
                    check: Callable[[], None] = lambda: None) -> None:
        """Send ``request`` aside and ``kill`` xend while the script's next ``op`` holds,
        after ``check`` (what the test asserts of that moment)."""
        self.hold(op)
        sent = in_background(request)
        try:
            self.wait_held()
            check()
            kill()
        finally:
            self.let_go()
        sent.join(30)


def in_background(request: Callable[[], object]) -> threading.Thread:
    """A request whose answer never comes (its xend is killed): sent aside, ignored."""
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            request()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
