"""Calls in flight on one connection: each request's id, the future its caller waits on,
and what happens when the answer is late or the connection goes.

Both drivers talk to their hypervisor this way (``sim/driver.py`` to xend-simhv,
``qemu/qmp.py`` to a qemu's monitor): any thread sends a request carrying an id, one
reader thread takes each reply off the connection and hands it to the caller waiting
for that id. ``Calls`` is that bookkeeping and nothing else: the connection, its
framing and its messages belong to its user.

``closed_on_error`` is the one way both turn a socket's failure into xend's error.

A late answer raises xend's ``Timeout``, and the call is forgotten, so an answer that
comes after all finds nobody waiting and is dropped. Once the connection is lost,
every call waiting and every later one fails with the error its user says, for each
call by name.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from xend_actors.errors import Timeout, XendError

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Call(Generic[T]):
    """One request in flight: its id on the wire, its name (for errors), its answer."""

    id: int
    name: str
    future: Future[T] = field(default_factory=Future, repr=False)


class Calls(Generic[T]):
    """The calls in flight on one connection; safe to use from any thread.

    ``late(name, seconds)`` is the sentence of the Timeout for a call not answered in
    time; ``lost(name)`` is the error of a call made or waiting once the connection is
    gone.
    """

    def __init__(self, *, late: Callable[[str, float], str],
                 lost: Callable[[str], XendError]) -> None:
        self._late = late
        self._lost_error = lost
        self._lock = threading.Lock()  # guards the fields below
        self._pending: dict[int, Call[T]] = {}
        self._ids = itertools.count(1)
        self._lost = False

    @property
    def lost(self) -> bool:
        return self._lost

    def start(self, name: str) -> Call[T]:
        """A new call, pending until it is answered; the lost error once the connection
        is gone."""
        with self._lock:
            if self._lost:
                raise self._lost_error(name)
            call: Call[T] = Call(next(self._ids), name)
            self._pending[call.id] = call
        return call

    def take(self, call_id: int | None) -> Call[T] | None:
        """The call an answer with ``call_id`` is for, no longer pending; None when nobody
        waits for it (it was late, or the id is not one of ours)."""
        if call_id is None:
            return None
        with self._lock:
            return self._pending.pop(call_id, None)

    def wait(self, call: Call[T], timeout: float) -> T:
        """The answer to ``call`` (or the error it got), within ``timeout`` seconds."""
        try:
            return call.future.result(timeout=timeout)
        except TimeoutError:
            self.take(call.id)
            raise Timeout(self._late(call.name, timeout)) from None

    def lose(self) -> None:
        """The connection is gone: fail every call waiting, and every later one."""
        with self._lock:
            self._lost = True
            pending, self._pending = self._pending, {}
        for call in pending.values():
            call.future.set_exception(self._lost_error(call.name))


@contextlib.contextmanager
def closed_on_error(sock: socket.socket, *, late: Callable[[], XendError],
                    broken: Callable[[OSError | ValueError], XendError]) -> Iterator[None]:
    """Talk on ``sock``: on any error it is closed, and a timeout raised as ``late()``,
    a broken connection (or a garbled answer) as ``broken(error)``."""
    try:
        yield
    except TimeoutError:
        sock.close()
        raise late() from None
    except (OSError, ValueError) as error:
        sock.close()
        raise broken(error) from None
    except BaseException:
        sock.close()
        raise
