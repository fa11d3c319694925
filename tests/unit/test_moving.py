"""``Moving`` (transfer/moving.py): a name a transfer holds is refused at once to a second
one; a name whose domain migrated away and is still being torn down here is waited for,
so a migration straight back (or a restore) takes it as soon as the teardown ends."""

from __future__ import annotations

import threading
import time

import pytest

from xend_actors.errors import Conflict
from xend_actors.transfer.moving import Moving


def test_a_name_held_by_a_transfer_is_refused_at_once() -> None:
    moving = Moving()
    moving.take("d1", "migrated")
    began = time.monotonic()
    with pytest.raises(Conflict, match="domain d1 is already being migrated"):
        moving.take("d1", "migrated in")
    assert time.monotonic() - began < 1.0
    moving.release("d1")
    moving.take("d1", "restored")


def test_a_name_being_torn_down_is_taken_once_its_teardown_ends() -> None:
    moving = Moving()
    moving.take("d2", "migrated")
    moving.leaving("d2")
    moving.release("d2")  # the migration answered; its teardown goes on
    taken = threading.Event()

    def migrate_back_in() -> None:
        moving.take("d2", "migrated in")
        taken.set()

    thread = threading.Thread(target=migrate_back_in)
    thread.start()
    assert not taken.wait(0.2), "taken while the old domain was still being torn down"
    moving.left("d2")
    assert taken.wait(5.0), "not taken once the teardown ended"
    thread.join(5.0)
    with pytest.raises(Conflict, match="already being migrated in"):
        moving.take("d2", "restored")
