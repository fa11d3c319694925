"""XendClient's HTTP against a server on a real Unix socket that keeps connections alive.

A xend that keeps connections alive may close an idle one whenever it likes; the client
must then open a new one rather than fail the next request.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from xend_actors import sxp
from xend_actors.client import XendClient

REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/sxp\r\n"
         b"Content-Length: 11\r\n\r\n(answer 42)")


def read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_requests_share_a_connection_until_the_server_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "xend.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(0.05)
    carried: list[int] = []  # requests on each connection
    close_idle, closed, stop = threading.Event(), threading.Event(), threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            carried.append(0)
            with connection:
                connection.settimeout(0.05)
                while not close_idle.is_set():
                    try:
                        request = read_request(connection)
                    except TimeoutError:
                        continue
                    if not request:
                        break
                    carried[-1] += 1
                    connection.sendall(REPLY)
            close_idle.clear()
            closed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with XendClient(unix_path=path) as client:
            assert client.get("/xend/") == ["answer", "42"]
            assert client.get("/xend/") == ["answer", "42"]
            assert carried == [2]  # one connection, kept alive
            close_idle.set()  # the server drops the idle connection
            assert closed.wait(5)
            assert client.get("/xend/") == ["answer", "42"]  # on a new one, no error
            assert carried == [2, 1]
    finally:
        stop.set()
        close_idle.set()
        thread.join(5)
        listener.close()


def test_a_reply_larger_than_a_request_may_be_is_read(tmp_path: Path) -> None:
    """Every domain's info at 10,000 domains is some 4 MiB: past ``sxp.MAX_SIZE``,
    which bounds what xend is sent, not what it answers."""
    path = tmp_path / "xend.sock"
    domains = [["domain", ["name", f"d{n:05d}"], ["memory", "16"]] for n in range(60_000)]
    body = sxp.show(domains).encode()
    assert len(body) > sxp.MAX_SIZE
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            read_request(connection)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/sxp\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(body) + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with XendClient(unix_path=path) as client:
            assert client.xend_domains(detail=True) == domains
    finally:
        thread.join(timeout=10)
        listener.close()
