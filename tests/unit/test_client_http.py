"""XendClient's HTTP against a server on a real Unix socket that keeps connections alive.

A xend that keeps connections alive may close an idle one whenever it likes; the client
must then open a new one rather than fail the next request.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.client_http import Connections
from xend_actors.errors import XendError

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


class Canned:
    """A server on a real Unix socket that answers each request with the next canned
    reply (raw bytes, or a list of byte strings sent one by one, each after the test
    says so), keeping the connection unless a reply is followed by ``CLOSE``."""

    def __init__(self, path: Path, replies: list[bytes | list[bytes] | str]) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.go_on = threading.Semaphore(0)  # one release per further piece of a list
        self._replies = list(replies)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._replies:
            connection, _ = self._listener.accept()
            self.connections += 1
            with connection:
                while self._replies:
                    head = read_request(connection)
                    if not head:
                        break
                    length = re.search(rb"Content-Length: (\d+)", head)
                    body = head.split(b"\r\n\r\n", 1)[1]
                    while length and len(body) < int(length[1]):
                        body += connection.recv(65536)
                    self.requests.append(head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body)
                    reply = self._replies.pop(0)
                    pieces = reply if isinstance(reply, list) else [reply]
                    for number, piece in enumerate(pieces):
                        if number:
                            self.go_on.acquire()
                        connection.sendall(piece if isinstance(piece, bytes) else b"")
                    if self._replies and self._replies[0] == CLOSE:
                        self._replies.pop(0)
                        break

    def close(self) -> None:
        self._thread.join(10)
        self._listener.close()


CLOSE = "close"
OK_SXP = b"HTTP/1.1 200 OK\r\nContent-Type: application/sxp\r\n"


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "xend.sock"


def test_a_chunked_reply_is_read_whole_and_its_connection_kept(socket_path: Path) -> None:
    chunked = (OK_SXP + b"Transfer-Encoding: chunked\r\n\r\n"
               b"4;ext=1\r\n(ans\r\n7\r\nwer 42)\r\n0\r\nX-Trailer: t\r\n\r\n")
    server = Canned(socket_path, [chunked, REPLY])
    try:
        with XendClient(unix_path=socket_path) as client:
            assert client.get("/xend/") == ["answer", "42"]
            assert client.get("/xend/node/") == ["answer", "42"]
        assert server.connections == 1
    finally:
        server.close()


def test_a_reply_that_ends_its_connection_is_read_to_the_end_and_not_reused(
        socket_path: Path) -> None:
    """Connection: close, and an HTTP/1.0 reply without a length (read until the end)."""
    server = Canned(socket_path, [
        OK_SXP + b"Connection: close\r\nContent-Length: 11\r\n\r\n(answer 42)", CLOSE,
        b"HTTP/1.0 200 OK\r\nContent-Type: application/sxp\r\n\r\n(answer 43)", CLOSE,
        REPLY])
    try:
        with XendClient(unix_path=socket_path) as client:
            assert client.get("/xend/") == ["answer", "42"]
            assert client.get("/xend/") == ["answer", "43"]
            assert client.get("/xend/") == ["answer", "42"]
        assert server.connections == 3
    finally:
        server.close()


def test_interim_replies_are_skipped_and_204_has_no_body(socket_path: Path) -> None:
    server = Canned(socket_path, [
        b"HTTP/1.1 100 Continue\r\n\r\n" + REPLY,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        REPLY])
    try:
        with XendClient(unix_path=socket_path) as client:
            assert client.get("/xend/") == ["answer", "42"]
            assert client.get("/xend/") is None
            assert client.get("/xend/") == ["answer", "42"]
        assert server.connections == 1
    finally:
        server.close()


def test_a_request_says_what_it_sends(socket_path: Path) -> None:
    server = Canned(socket_path, [REPLY, REPLY])
    try:
        with XendClient(unix_path=socket_path, token="secret") as client:
            client.xend_domain_shutdown("a b/c", "x&y=z é")
            client.get("/xend/domain/", detail=1)
        post, get = server.requests
        head, body = post.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /xend/domain/a%20b%2Fc HTTP/1.1"
        assert b"Host: xend" in lines and b"Accept: application/sxp" in lines
        assert b"Authorization: Bearer secret" in lines
        assert b"Content-Type: application/x-www-form-urlencoded" in lines
        assert f"Content-Length: {len(body)}".encode() in lines
        assert body == b"op=shutdown&reason=x%26y%3Dz+%C3%A9"
        assert get.split(b"\r\n")[0] == b"GET /xend/domain/?detail=1 HTTP/1.1"
    finally:
        server.close()


def test_a_streamed_reply_gives_each_line_as_it_comes(socket_path: Path) -> None:
    """Lines split across chunks come whole, each as soon as it is complete."""
    server = Canned(socket_path, [[
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n6\r\nid: 1\n\r\n",
        b"2\r\nev\r\n",
        b"a\r\nent: x\n\nid\r\n",
        b"3\r\n: 2\r\n0\r\n\r\n"]])
    try:
        with Connections(unix_path=str(socket_path), headers={}, timeout=10).stream(
                "GET", "/xend/event/") as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()
            assert next(lines) == "id: 1"  # before the server has sent anything more
            server.go_on.release()
            server.go_on.release()
            assert next(lines) == "event: x"
            assert next(lines) == ""
            server.go_on.release()
            assert list(lines) == ["id: 2"]
    finally:
        server.close()


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    OK_SXP + b"no colon here\r\n\r\n",
    OK_SXP + b"X: y\r\n" * 101 + b"\r\n",
    OK_SXP + b"X: " + b"y" * 70_000 + b"\r\n\r\n",
    OK_SXP + b"Content-Length: eleven\r\n\r\n(answer 42)",
    OK_SXP + b"Content-Length: 20\r\n\r\n(answer 42)",
    OK_SXP + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n(answer 42)\r\n0\r\n\r\n",
    OK_SXP + b"Transfer-Encoding: chunked\r\n\r\n5\r\n(answer 42)\r\n0\r\n\r\n",
    b"",
])
def test_a_reply_that_is_not_http_is_one_clear_error(socket_path: Path, reply: bytes) -> None:
    server = Canned(socket_path, [reply, CLOSE])
    try:
        with XendClient(unix_path=socket_path) as client, \
                pytest.raises(XendError, match=r"^Error connecting to xend at unix://"):
            client.get("/xend/")
    finally:
        server.close()


def test_a_header_that_would_split_the_request_is_refused(socket_path: Path) -> None:
    with XendClient(unix_path=socket_path, token="secret\r\nX-Evil: 1") as client, \
            pytest.raises(XendError, match="Authorization header"):
        client.get("/xend/")
    assert not socket_path.exists()  # refused before any connection
