"""Pipes between a stream driver and a connection: big ones, written with a deadline,
and waiting on a descriptor with ``poll``. The kernel moves a stream coming in from a
socket into a pipe (``splice``, ``SPLICE_FLAGS``), so its bytes never pass through xend's
memory (one going out is read into a buffer: ``Channel.send_pipe`` says why)."""

from __future__ import annotations

import fcntl
import os
import select
import socket

from xend_actors.transfer.xfr.messages import MAX_DATA, Code, XfrError

SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
# A migration's stream passes hypervisor, pipe, xend, socket, xend, pipe, hypervisor on
# few cores: pipes of 4 MiB let each stage work in longer runs between stalls (a live
# migration of the 128 MiB test guest went some 20 % faster than with 1 MiB). Above
# ``pipe-max-size`` only with CAP_SYS_RESOURCE; else that size.
PIPE_SIZE = 4 * MAX_DATA


def open_pipe(xend_writes: bool, size: int = PIPE_SIZE) -> tuple[int, int]:
    """A pipe (read end, write end) with a buffer of ``size``, or as large as the host
    allows, so a stream moves in big steps. When xend writes to it, its end does not
    block, so ``write_all`` keeps its deadline."""
    read, write = os.pipe2(os.O_CLOEXEC)
    if xend_writes:
        os.set_blocking(write, False)
    try:
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        try:
            limit = int(open("/proc/sys/fs/pipe-max-size").read())  # noqa: SIM115
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, min(limit, size))
        except (OSError, ValueError):
            pass  # the default 64 KiB works, only slower
    return read, write


def write_all(fd: int, data: bytes | memoryview, timeout: float) -> None:
    """Write all of ``data`` to ``fd``, waiting at most ``timeout`` s for room each time;
    XfrError if the reader went away or took nothing for that long."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # full: wait for room
            if not ready(fd, "w", timeout):
                raise XfrError(f"the reader of the stream took nothing for {timeout:g} s",
                               Code.ETIMEDOUT) from None
            continue
        except OSError as error:
            raise XfrError(f"the reader of the stream went away: "
                           f"{error.strerror or error}") from None
        view = view[written:]


def ready(what: socket.socket | int, how: str, timeout: float | None) -> bool:
    """Whether ``what`` can be read (``how`` "r") or written ("w") within ``timeout`` s
    (None: however long it takes); an error or a hang-up counts as ready, for the next
    call to say what it is. poll, not select: xend may have fds past FD_SETSIZE."""
    poller = select.poll()
    poller.register(what, select.POLLIN if how == "r" else select.POLLOUT)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
