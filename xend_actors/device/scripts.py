"""Running xend's helper scripts: ``network``, ``vif-<kind>`` and ``block-<type>`` (facts §3, §9.7).

A script is named in the config and found in ``xend-scripts-dir``, else among the
scripts shipped with xend-actors (``netscripts/``). The config's value is a command,
split as a shell would (``network netdev=eth0``): the script's name, then words of
its own. It runs as an argument vector, never through a shell: the operation first
(``start``, ``up``, ``bind``: what the original's scripts read as ``$1``), the
original's words, then the config's (so a ``key=value`` of the config's wins in a
script that exports them in order, as Xen's do). Its output is captured and a
failure becomes one ``XendError`` line carrying the script's own last line of error.
``check_scripts`` finds every configured script when xend starts, so a missing network
or vif script is an error naming its option then, not at a domain's first vif (a
missing block script is a warning: the original's configs name some we do not ship).
Our scripts are Python and run with xend's own interpreter, so they find pyroute2
wherever xend was installed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from xend_actors.config import ConfigError, XendConfig, script_words
from xend_actors.errors import BadRequest, Timeout, XendError

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


def check_scripts(config: XendConfig) -> list[str]:
    """Every network and vif script the config names exists and can run; ConfigError
    naming the option of the first that does not. A missing ``block-TYPE`` script is
    only a warning, returned: the original's configs name ``block-file`` and
    ``block-enbd``, which xend-actors does not ship, and must still start xend; a disk
    of that type is refused when it is attached, naming the script."""
    options = {"vif-script": config.vif_script}
    if config.vif_bridge != "null":  # else the network script is never run
        options["network-script"] = config.network_script
    where = f"{config.source}: " if config.source else ""
    for option, command in options.items():
        problem = _script_problem(config, command)
        if problem:
            raise ConfigError(f"{where}({option} {command!r}): {problem}")
    return [f"{where}(block-{kind} {command!r}): {problem}; disks of type {kind} will "
            "be refused"
            for kind, command in config.block_scripts.items()
            if (problem := _script_problem(config, command))]


def _script_problem(config: XendConfig, command: str) -> str:
    """What keeps ``command``'s script from running; empty if nothing does."""
    name = script_words(command)[0]
    path = find_script(config, name)
    if not path.is_file():
        looked = name if Path(name).is_absolute() else \
            f"{name} in {config.scripts_dir} or among xend's own ({SHIPPED_SCRIPTS})"
        return f"no script {looked}"
    if not os.access(path, os.X_OK) and not _interpreter(path):
        return f"script {path} is not executable"
    return ""


def run_script(config: XendConfig, command: str, args: Sequence[str], *,
               what: str, timeout: float = SCRIPT_TIMEOUT) -> list[str]:
    """Run ``command`` (a script and its own words) with ``args`` (the operation first)
    before those words, for at most ``timeout`` s; its output lines. ``what`` names the
    job in errors."""
    try:
        name, *own = script_words(command)
    except ValueError as e:
        raise BadRequest(f"{what}: script {e}") from None
    path = find_script(config, name)
    argv = [*_interpreter(path), str(path), *args, *own]
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
