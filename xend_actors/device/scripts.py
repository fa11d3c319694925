"""Running xend's helper scripts: ``network``, ``vif-<kind>`` and ``block-<type>`` (facts §3, §9.7).

A script is named in the config and found in ``xend-scripts-dir``, else among the
scripts shipped with xend-actors (``netscripts/``). It runs as an argument vector,
never through a shell, with the original's ``key=value`` words; its output is
captured and a failure becomes one ``XendError`` line carrying the script's own
last line of error. Our scripts are Python and run with xend's own interpreter, so
they find pyroute2 wherever xend was installed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from xend_actors.config import XendConfig
from xend_actors.errors import Timeout, XendError

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 60.0
SHIPPED_SCRIPTS = Path(__file__).resolve().parents[2] / "netscripts"


def find_script(config: XendConfig, name: str) -> Path:
    """The script called ``name``: absolute as given, else in the scripts dir, else shipped."""
    path = config.script_path(name)
    if not path.is_absolute() or path.exists() or Path(name).is_absolute():
        return path
    shipped = SHIPPED_SCRIPTS / name
    return shipped if shipped.exists() else path


def run_script(config: XendConfig, name: str, args: Sequence[str], *,
               what: str, timeout: float = SCRIPT_TIMEOUT) -> list[str]:
    """Run script ``name`` with ``args`` for at most ``timeout`` s; its output lines.
    ``what`` names the job in errors."""
    path = find_script(config, name)
    argv = [*_interpreter(path), str(path), *args]
    env = {**os.environ, "XEND_RUN_DIR": str(config.run_dir)}
    log.debug("Running %s", argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env, check=False)
    except FileNotFoundError:
        raise XendError(f"{what}: script {path} not found") from None
    except PermissionError:
        raise XendError(f"{what}: script {path} is not executable") from None
    except subprocess.TimeoutExpired:
        raise Timeout(f"{what}: script {path} did not finish in {timeout:.3g} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise XendError(f"{what}: {why}")
    return done.stdout.splitlines()


def _interpreter(path: Path) -> list[str]:
    """``[sys.executable]`` for a Python script, so it runs with xend's own packages."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return []
    return [sys.executable] if first.startswith(b"#!") and b"python" in first else []
