"""Fixtures shared by the test suites: real xend processes in temporary folders."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.support import XendHome, new_home


@pytest.fixture
def xend_home() -> Iterator[Callable[..., XendHome]]:
    """A factory of xend folders; every xend started in one is stopped afterwards."""
    homes: list[XendHome] = []

    def make(extra: str = "") -> XendHome:
        home = new_home(extra)
        homes.append(home)
        return home

    yield make
    for home in homes:
        home.xend("stop")
        home.kill_simhv()
        shutil.rmtree(home.root, ignore_errors=True)


@pytest.fixture
def running_xend(xend_home: Callable[..., XendHome]) -> XendHome:
    """A started xend with default test settings."""
    home = xend_home()
    started = home.xend("start")
    assert started.returncode == 0, started.stderr
    return home
