"""A small QMP client: one connection to one qemu's monitor socket, shared by threads.

Commands go out from any thread, each with an ``id`` that its reply carries back; a
reader thread hands each reply to the caller waiting for it and each event to the
``on_event`` callback, in order. When qemu closes the connection (it exited, or was
killed), the waiting callers and every later call fail with a HypervisorError, and
``on_close`` is called once. Callbacks run on the reader thread: they must not wait
for a reply on this connection.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from xend_actors.errors import HypervisorError, Timeout

log = logging.getLogger(__name__)

MAX_LINE = 16 * 1024 * 1024  # a query-* reply can be long; a line past this is garbage


class QmpError(HypervisorError):
    """qemu answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"qemu refused {command}: {desc}")
        self.error_class = error_class
        self.desc = desc


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


class Qmp:
    def __init__(self, path: Path, sock: socket.socket, lines: BinaryIO, *, timeout: float,
                 on_event: Callable[[QmpEvent], None],
                 on_close: Callable[[], None]) -> None:
        self.path = path
        self.timeout = timeout
        self._sock = sock
        self._lines = lines  # what came after the greeting may be buffered in it already
        self._on_event = on_event
        self._on_close = on_close
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the fields below
        self._pending: dict[int, tuple[str, Future[Any]]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._thread = threading.Thread(target=self._read, name=f"qmp-{path.parent.name}",
                                        daemon=True)

    @classmethod
    def connect(cls, path: Path, *, timeout: float = 10.0,
                on_event: Callable[[QmpEvent], None] = lambda event: None,
                on_close: Callable[[], None] = lambda: None) -> Qmp:
        """Connect, read the greeting, leave capabilities negotiation; then events flow."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            lines = sock.makefile("rb")
            greeting = json.loads(lines.readline(MAX_LINE) or b"null")
            if not isinstance(greeting, dict) or "QMP" not in greeting:
                raise HypervisorError(f"{path} is not a QMP monitor (it said {greeting!r})")
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            reply = json.loads(lines.readline(MAX_LINE) or b"null")
            if not isinstance(reply, dict) or "return" not in reply:
                raise HypervisorError(f"qemu at {path} refused QMP capabilities: {reply!r}")
        except TimeoutError:
            sock.close()
            raise Timeout(f"qemu's monitor at {path} did not answer within {timeout:g} s "
                          "(is another client connected to it?)") from None
        except (OSError, ValueError) as error:
            sock.close()
            raise HypervisorError(f"cannot talk to qemu's monitor at {path}: "
                                  f"{getattr(error, 'strerror', None) or error}") from None
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        qmp = cls(path, sock, lines, timeout=timeout, on_event=on_event, on_close=on_close)
        qmp._thread.start()
        return qmp

    @property
    def closed(self) -> bool:
        return self._closed

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None,
                timeout: float | None = None, fd: int | None = None) -> Any:
        """Run ``command``; its ``return`` value, or QmpError with qemu's reason. ``fd``
        goes along with the command (SCM_RIGHTS), as ``getfd`` wants it."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise self._gone(command)
            request_id = next(self._ids)
            self._pending[request_id] = (command, future)
        request: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = dict(arguments)
        try:
            data = json.dumps(request).encode() + b"\n"
            with self._write_lock:
                if fd is None:
                    self._sock.sendall(data)
                else:
                    rights = array.array("i", [fd]).tobytes()
                    sent = self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                        rights)])
                    self._sock.sendall(data[sent:])
        except OSError:
            self.close()
        wait = self.timeout if timeout is None else timeout
        try:
            return future.result(timeout=wait)
        except TimeoutError:
            with self._lock:
                self._pending.pop(request_id, None)
            raise Timeout(f"qemu did not answer {command} within {wait:g} s "
                          f"(monitor {self.path})") from None

    def close(self) -> None:
        """Let go of the connection (qemu keeps running); wakes every waiting caller."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _read(self) -> None:
        try:
            while True:
                line = self._lines.readline(MAX_LINE)
                if not line:
                    break
                self._dispatch(json.loads(line))
        except ConnectionResetError:
            pass  # qemu exited with bytes of ours unread: as good as an end of file
        except (OSError, ValueError) as error:
            if not self._closed:
                log.warning("Reading qemu's monitor at %s failed: %s", self.path, error)
        finally:
            with self._lock:
                self._closed = True
                pending, self._pending = self._pending, {}
            for command, future in pending.values():
                future.set_exception(self._gone(command))
            self._lines.close()
            self._sock.close()
            try:
                self._on_close()
            except Exception:
                log.exception("The close handler of qemu's monitor at %s failed", self.path)

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "event" in message:
            try:
                self._on_event(QmpEvent(str(message["event"]), message.get("data") or {}))
            except Exception:
                log.exception("Handling qemu event %s from %s failed", message["event"],
                              self.path)
            return
        with self._lock:
            waiting = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if waiting is None:
            return
        command, future = waiting
        if "error" in message:
            error = message["error"] or {}
            future.set_exception(QmpError(command, str(error.get("class", "")),
                                          str(error.get("desc", error))))
        else:
            future.set_result(message.get("return"))

    def _gone(self, command: str) -> HypervisorError:
        return HypervisorError(f"qemu's monitor at {self.path} is closed (qemu exited?); "
                               f"cannot run {command}")
