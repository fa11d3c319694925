"""XendClient against a real xend: the original client rule over TCP and Unix socket."""

from __future__ import annotations

import os

import pytest

from tests.support.home import XendHome
from tests.support.ports import free_port
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError

pytestmark = pytest.mark.integration


def test_root_and_node_over_tcp_and_unix_socket(shared_home: XendHome) -> None:
    for client in (XendClient(f"127.0.0.1:{shared_home.http_port}",
                              token=shared_home.admin_token()),
                   XendClient(unix_path=shared_home.unix_path)):
        with client:
            assert client.xend() == ["ls", "node", "domain", "console", "event", "device",
                                     "vnet"]
            assert sxp.child_value(client.xend_node(), "host") == os.uname().nodename


def test_node_log_is_text_with_the_start_line(shared_home: XendHome) -> None:
    with XendClient(unix_path=shared_home.unix_path) as client:
        assert "Xend Daemon started" in client.xend_node_log()


def test_server_comes_from_the_environment(shared_home: XendHome,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XEND", f"127.0.0.1:{shared_home.http_port}")
    monkeypatch.setenv("XEND_TOKEN", shared_home.admin_token())
    with XendClient() as client:
        assert client.xend()[0] == "ls"


def test_over_tcp_without_a_token_xend_says_what_it_needs(shared_home: XendHome) -> None:
    with XendClient(f"127.0.0.1:{shared_home.http_port}") as client, \
            pytest.raises(XendError, match="Authentication required: an API token") as error:
        client.xend_domains()
    assert error.value.status == 401


def test_errors_raise_with_the_message_and_status(shared_home: XendHome) -> None:
    with XendClient(unix_path=shared_home.unix_path) as client:
        with pytest.raises(XendError, match="Operation not implemented: fly") as error:
            client.post(client.url("node"), "fly")
        assert error.value.status == 501
        with pytest.raises(XendError) as missing:
            client.get(client.url("nothing"))
        assert missing.value.status == 404


def test_no_xend_is_one_clear_error() -> None:
    with XendClient(f"127.0.0.1:{free_port()}") as client, \
            pytest.raises(XendError, match=r"Error connecting to xend .* is xend running"):
        client.xend()
