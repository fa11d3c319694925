"""A QMP connection: one connection to one qemu's monitor socket, shared by threads.

Commands go out from any thread, each with an ``id`` that its reply carries back; a
reader thread hands each reply to the caller waiting for it and each event to the
``on_event`` callback, in order. When qemu closes the connection (it exited, or was
killed), the waiting callers and every later call fail with a HypervisorError, and
``on_close`` is called once. Callbacks run on the reader thread: they must not wait
for a reply on this connection. The lines are ``qmp_protocol``'s; the calls in flight
are ``rpc.Calls``. ``Qmp.open`` connects in two steps, for a caller with other work while
a qemu just launched makes its machine: the capabilities and first questions are sent
in one write, and ``Opening.finish`` takes the greeting and the answers.
"""

from __future__ import annotations

import array
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from xend_actors.errors import HypervisorError, Timeout
from xend_actors.hypervisor.qemu import qmp_protocol
from xend_actors.hypervisor.qemu.qmp_protocol import MAX_LINE, ErrorReply, Event, Greeting, Return
from xend_actors.hypervisor.rpc import Call, Calls, closed_on_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """One QMP command: its name, its arguments and an fd that goes with it (``getfd``)."""

    name: str
    arguments: Mapping[str, Any] | None = None
    fd: int | None = None


class QmpError(HypervisorError):
    """qemu answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"qemu refused {command}: {desc}")
        self.error_class = error_class
        self.desc = desc


class Qmp:
    def __init__(self, path: Path, sock: socket.socket, lines: BinaryIO, *, timeout: float,
                 on_event: Callable[[Event], None],
                 on_close: Callable[[], None]) -> None:
        self.path = path
        self.timeout = timeout
        self._sock = sock
        self._lines = lines  # what came after the greeting may be buffered in it already
        self._on_event = on_event
        self._on_close = on_close
        self._write_lock = threading.Lock()
        self._calls: Calls[Any] = Calls(late=self._late, lost=self._gone)
        self._let_go = False  # xend closed it: its end is no news
        self._thread = threading.Thread(target=self._read, name=f"qmp-{path.parent.name}",
                                        daemon=True)

    @classmethod
    def connect(cls, path: Path, *, timeout: float = 10.0,
                on_event: Callable[[Event], None] = lambda event: None,
                on_close: Callable[[], None] = lambda: None) -> Qmp:
        """Connect, read the greeting, leave capabilities negotiation; then events flow."""
        return cls.open(path, timeout=timeout, on_event=on_event, on_close=on_close).finish()[0]

    @classmethod
    def open(cls, path: Path, *, timeout: float = 10.0,
             on_event: Callable[[Event], None] = lambda event: None,
             on_close: Callable[[], None] = lambda: None,
             asking: Sequence[str] = ()) -> Opening:
        """Connect, send ``qmp_capabilities`` and the argument-less commands ``asking``
        in one write, and return without waiting for the greeting or the answers:
        ``Opening.finish`` reads them (qemu reads what was sent once it has greeted)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        with _talking(path, sock, timeout):
            sock.connect(str(path))
            lines = sock.makefile("rb")
            qmp = cls(path, sock, lines, timeout=timeout, on_event=on_event, on_close=on_close)
            calls = [qmp._calls.start(command) for command in asking]
            sock.sendall(qmp_protocol.command("qmp_capabilities") + b"".join(
                qmp_protocol.command(call.name, None, call.id) for call in calls))
        return Opening(qmp, calls)

    @property
    def closed(self) -> bool:
        return self._calls.lost

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None,
                timeout: float | None = None, fd: int | None = None,
                until: threading.Event | None = None) -> Any:
        """Run ``command``; its ``return`` value, or QmpError with qemu's reason. ``fd``
        goes along with the command (SCM_RIGHTS), as ``getfd`` wants it. Given ``until``
        (an event's handler sets it: the command's effect, said before its answer), None
        once it is set if the answer has not come by then."""
        call = self._send(Command(command, arguments, fd))
        if until is not None:
            call.future.add_done_callback(lambda _: until.set())
        seconds = self.timeout if timeout is None else timeout
        if until is None:
            return self._calls.wait(call, seconds)
        if not until.wait(seconds):
            self._calls.take(call.id)
            raise Timeout(self._late(command, seconds))
        if not call.future.done():
            return None  # the answer is left to the reader, for nobody
        return call.future.result()

    def execute_all(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` in their order, each sent without waiting for the answer to
        the one before (qemu runs them one after another); their ``return`` values once
        all have answered, else the first one's QmpError."""
        calls = [self._send(command) for command in commands]
        answers: list[Any] = []
        failure: BaseException | None = None
        for call in calls:
            try:
                answers.append(self._calls.wait(call, self.timeout))
            except QmpError as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return answers

    def _send(self, command: Command) -> Call[Any]:
        call = self._calls.start(command.name)
        data = qmp_protocol.command(command.name, command.arguments, call.id)
        try:
            with self._write_lock:
                if command.fd is None:
                    self._sock.sendall(data)
                else:
                    rights = array.array("i", [command.fd]).tobytes()
                    sent = self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                        rights)])
                    self._sock.sendall(data[sent:])
        except OSError:
            self.close()
        return call

    def close(self) -> None:
        """Let go of the connection (qemu keeps running); wakes every waiting caller."""
        if self._calls.lost:
            return
        self._let_go = True
        self._calls.lose()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _read(self) -> None:
        try:
            while line := _read_line(self._lines):
                self._dispatch(qmp_protocol.parse(line))
        except ConnectionResetError:
            pass  # qemu exited with bytes of ours unread: as good as an end of file
        except (OSError, ValueError) as error:
            if not self._let_go:
                log.warning("Reading qemu's monitor at %s failed: %s", self.path, error)
        finally:
            self._calls.lose()
            self._lines.close()
            self._sock.close()
            try:
                self._on_close()
            except Exception:
                log.exception("The close handler of qemu's monitor at %s failed", self.path)

    def _dispatch(self, message: qmp_protocol.Message | None) -> None:
        match message:
            case Event():
                try:
                    self._on_event(message)
                except Exception:
                    log.exception("Handling qemu event %s from %s failed", message.name,
                                  self.path)
            case Return() | ErrorReply():
                call = self._calls.take(message.id)
                if call is None:
                    return  # it was late: its caller has given up
                if isinstance(message, ErrorReply):
                    call.future.set_exception(QmpError(call.name, message.error_class,
                                                       message.desc))
                else:
                    call.future.set_result(message.value)

    def _late(self, command: str, seconds: float) -> str:
        return f"qemu did not answer {command} within {seconds:g} s (monitor {self.path})"

    def _gone(self, command: str) -> HypervisorError:
        return HypervisorError(f"qemu's monitor at {self.path} is closed (qemu exited?); "
                               f"cannot run {command}")


class Opening:
    """A monitor connection on its way: its capabilities and first commands sent. qemu
    greets and answers once its main loop runs: a qemu just launched, some tens of
    milliseconds on, which its launcher may spend on other work."""

    def __init__(self, qmp: Qmp, calls: list[Call[Any]]) -> None:
        self._qmp = qmp
        self._calls = calls

    def finish(self) -> tuple[Qmp, list[Any]]:
        """The connection, its events flowing, and the first commands' answers: each
        ``return`` value, or the QmpError qemu refused that command with (in the list,
        not raised)."""
        qmp = self._qmp
        with _talking(qmp.path, qmp._sock, qmp.timeout):
            said = qmp_protocol.decode(_read_line(qmp._lines) or b"null")
            if not isinstance(qmp_protocol.message(said), Greeting):
                raise HypervisorError(f"{qmp.path} is not a QMP monitor (it said {said!r})")
            said = qmp_protocol.decode(_read_line(qmp._lines) or b"null")
            if not isinstance(qmp_protocol.message(said), Return):
                raise HypervisorError(f"qemu at {qmp.path} refused QMP capabilities: "
                                      f"{said!r}")
        qmp._sock.settimeout(None)
        qmp._thread.start()
        answers: list[Any] = []
        for call in self._calls:
            try:
                answers.append(qmp._calls.wait(call, qmp.timeout))
            except QmpError as error:
                answers.append(error)
            except BaseException:
                qmp.close()
                raise
        return qmp, answers

    def abandon(self) -> None:
        """Let go of the connection unfinished (qemu keeps running); a ``finish`` waiting
        in another thread fails at once."""
        with contextlib.suppress(OSError):
            self._qmp._sock.shutdown(socket.SHUT_RDWR)
        self._qmp._lines.close()
        self._qmp._sock.close()


def _talking(path: Path, sock: socket.socket,
             timeout: float) -> contextlib.AbstractContextManager[None]:
    """Closes ``sock`` on any error, and says in xend's words what went wrong."""
    return closed_on_error(
        sock,
        late=lambda: Timeout(f"qemu's monitor at {path} did not answer within {timeout:g} s "
                             "(is another client connected to it?)"),
        broken=lambda error: HypervisorError(f"cannot talk to qemu's monitor at {path}: "
                                             f"{getattr(error, 'strerror', None) or error}"))


def _read_line(lines: BinaryIO) -> bytes:
    """One line, or what there is of one past ``MAX_LINE`` (which ``decode`` refuses)."""
    return lines.readline(MAX_LINE + 1)
