"""Fixtures shared by the test suites: real xend processes in temporary folders.

- ``xend``: a ``Xend`` on the xend that the tests of this module share; each test gets it
  with Domain-0 only and its events marked at its beginning, and every domain it leaves
  is destroyed after it. A module gives it a config of its own with a
  ``shared_xend_config`` fixture (module scope) returning config lines.
- ``shared_home``: that xend's ``XendHome``, for tests that only need its address.
- ``fresh_xend``: a factory of xends of the test's own (``fresh_xend(extra)`` → ``Xend``),
  for tests that stop, kill or restart xend, need another config, or need what only a
  new xend shows (its first session numbered 1, a global limit nobody else used).
- ``xend_home`` / ``running_xend``: a factory of (unstarted) folders / a started xend of
  the test's own, as ``XendHome``.

Every xend made here is stopped, its simhv and qemus killed and its folder removed after
its test (or module), on a thread of its own: the next test does not wait for that, and
the session waits for all of it at its end.

Under pytest-xdist (``./run-tests`` runs ``-n 2 --dist loadgroup``) the tests of a module
stay together on one worker (they share its xend), and the modules that boot qemu guests
all run on one worker, one after the other: two TCG guests booting at once on a small
machine would each take twice as long and their timing checks would suffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.home import XendHome, new_home
from tests.support.sharing import Reaper, SharedXend
from tests.support.xend import Xend


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for ``--dist loadgroup``: by module, and every module with a test
    that boots the qemu test guest (the ``guest`` fixture) in one group, ``qemu``."""
    qemu_modules = {item.path for item in items if "guest" in getattr(item, "fixturenames", ())}
    for item in items:
        group = "qemu" if item.path in qemu_modules else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def reaper() -> Iterator[Reaper]:
    made = Reaper()
    yield made
    made.close()


@pytest.fixture
def xend_home(reaper: Reaper) -> Iterator[Callable[..., XendHome]]:
    """A factory of xend folders; every xend started in one is stopped afterwards."""
    homes: list[XendHome] = []

    def make(extra: str = "") -> XendHome:
        home = new_home(extra)
        homes.append(home)
        return home

    yield make
    for home in homes:
        reaper.submit(str(home.root), home.tear_down)


@pytest.fixture
def running_xend(xend_home: Callable[..., XendHome]) -> XendHome:
    """A started xend of the test's own, with default test settings."""
    home = xend_home()
    home.start()
    return home


@pytest.fixture
def fresh_xend(xend_home: Callable[..., XendHome]) -> Iterator[Callable[..., Xend]]:
    """A factory of started xends of the test's own: ``fresh_xend(extra="")``."""
    made: list[Xend] = []

    def start(extra: str = "") -> Xend:
        home = xend_home(extra)
        home.start()
        made.append(Xend(home))
        return made[-1]

    yield start
    for xend in made:
        xend.close()


@pytest.fixture(scope="module")
def shared_xend_config() -> str:
    """Config lines of the module's shared xend (before the test defaults)."""
    return ""


@pytest.fixture(scope="module")
def shared_xend(reaper: Reaper, shared_xend_config: str) -> Iterator[SharedXend]:
    shared = SharedXend(reaper, shared_xend_config)
    yield shared
    shared.close()


@pytest.fixture
def xend(shared_xend: SharedXend) -> Iterator[Xend]:
    """The module's shared xend, with Domain-0 only; what the test leaves is destroyed."""
    yield shared_xend.take()
    shared_xend.give_back()


@pytest.fixture
def shared_home(xend: Xend) -> XendHome:
    """The folder of the module's shared xend (see ``xend``)."""
    return xend.home
