"""The xend daemon as a user runs it: start, serve HTTP on TCP and Unix socket, stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
from collections.abc import Callable

import httpx
import pytest

from tests.support.home import XendHome
from tests.support.processes import wait_for, xend_command
from xend_actors import sxp

pytestmark = pytest.mark.integration

NODE_FIELDS = ["system", "host", "release", "version", "machine", "cores",
               "hyperthreads_per_core", "cpu_mhz", "memory", "free_memory", "events_unwritten"]


def test_start_reports_pid_and_status_sees_it(xend_home: Callable[..., XendHome]) -> None:
    home = xend_home()
    started = home.xend("start")
    assert started.returncode == 0, started.stderr
    pid = int(re.fullmatch(r"xend started \(pid (\d+)\)\n", started.stdout).group(1))
    assert home.pid_file.read_text().strip() == str(pid)
    status = home.xend("status")
    assert status.returncode == 0
    assert status.stdout == f"xend is running (pid {pid})\n"
    assert (home.logfile.parent / "xend-debug.log").exists()


def test_root_lists_the_resources_over_tcp(shared_home: XendHome) -> None:
    for path in ("/xend/", "/xend"):
        assert shared_home.get_sxp(path) == [
            "ls", "node", "domain", "console", "event", "device", "vnet"]


def test_node_info_is_this_host_with_the_hypervisors_size(
    xend_home: Callable[..., XendHome],
) -> None:
    home = xend_home("(sim-memory 3000) (sim-cpus 3)")
    home.start()
    node = home.get_sxp("/xend/node/")
    assert sxp.name(node) == "node"
    assert [sxp.name(field) for field in sxp.children(node)] == NODE_FIELDS
    assert sxp.child_value(node, "host") == os.uname().nodename
    assert sxp.child_value(node, "system") == "Linux"
    assert sxp.child_value(node, "memory") == "3000"
    assert sxp.child_value(node, "free_memory") == str(3000 - 512)  # Domain-0's share
    assert sxp.child_value(node, "cores") == "3"


def test_unix_socket_serves_the_same_and_is_root_only(shared_home: XendHome) -> None:
    mode = os.stat(shared_home.unix_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    with shared_home.unix_http() as client:
        reply = client.get("/xend/node/")
    assert reply.status_code == 200
    assert sxp.child_value(sxp.parse(reply.text), "host") == os.uname().nodename


def test_browsers_get_html_programs_get_sxp(shared_home: XendHome) -> None:
    with shared_home.http() as client:
        page = client.get("/xend/node/", headers={"User-Agent": "Mozilla/5.0",
                                                  "Accept": "text/html"})
        program = client.get("/xend/node/", headers={"User-Agent": "Mozilla/5.0",
                                                     "Accept": "application/sxp"})
    assert page.headers["content-type"].startswith("text/html")
    assert '<a href="/xend/node/">node</a>' in page.text
    assert os.uname().nodename in page.text
    assert program.headers["content-type"] == "application/sxp"


def test_unknown_url_is_404_with_xend_err(shared_home: XendHome) -> None:
    with shared_home.http() as client:
        reply = client.get("/xend/nothing-here")
    assert reply.status_code == 404
    assert sxp.name(sxp.parse(reply.text)) == "xend.err"


def test_second_start_refuses(running_xend: XendHome) -> None:
    again = running_xend.xend("start")
    assert again.returncode == 1
    assert re.search(r"xend is already running \(pid \d+\)", again.stderr)


def test_stop_waits_removes_pid_file_and_logs(running_xend: XendHome) -> None:
    pid = int(running_xend.pid_file.read_text())
    stopped = running_xend.xend("stop")
    assert stopped.returncode == 0 and stopped.stdout == "xend stopped\n"
    assert not running_xend.pid_file.exists()
    assert not running_xend.unix_path.exists()
    assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)
    status = running_xend.xend("status")
    assert status.returncode == 3 and status.stdout == "xend is not running\n"
    log = running_xend.logfile.read_text()
    line = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d xend\] INFO \(daemon:\d+\) Xend Daemon "
    assert re.search(line + "started", log, re.MULTILINE)
    assert re.search(line + "stopped", log, re.MULTILINE)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running_xend.http_port), timeout=2)


def test_stop_when_not_running_is_fine(xend_home: Callable[..., XendHome]) -> None:
    stopped = xend_home().xend("stop")
    assert stopped.returncode == 0 and stopped.stdout == "xend is not running\n"


def test_kill_9_leaves_no_lock_so_start_works_again(running_xend: XendHome) -> None:
    os.kill(int(running_xend.pid_file.read_text()), signal.SIGKILL)
    wait_for(lambda: running_xend.xend("status").returncode == 3, what="xend to be dead")
    assert running_xend.pid_file.exists()  # stale file, no lock
    restarted = running_xend.xend("start")
    assert restarted.returncode == 0, restarted.stderr
    assert running_xend.get_sxp("/xend/")[0] == "ls"


def test_restart_serves_again_with_a_new_pid(running_xend: XendHome) -> None:
    before = int(running_xend.pid_file.read_text())
    restarted = running_xend.xend("restart")
    assert restarted.returncode == 0, restarted.stderr
    assert int(running_xend.pid_file.read_text()) != before
    assert running_xend.get_sxp("/xend/")[0] == "ls"


def test_hosts_allow_refuses_other_tcp_clients_but_not_the_unix_socket(
    xend_home: Callable[..., XendHome],
) -> None:
    home = xend_home(r"(xend-hosts-allow ^10\.1\.2\.3$)")
    home.start()
    with home.http() as client:
        refused = client.get("/xend/")
    assert refused.status_code == 403
    assert sxp.parse(refused.text) == [
        "xend.err", "client 127.0.0.1 is not allowed by xend-hosts-allow"]
    with home.unix_http() as client:
        assert client.get("/xend/").status_code == 200


def test_hosts_allow_admits_localhost_by_name(xend_home: Callable[..., XendHome]) -> None:
    home = xend_home("(xend-hosts-allow '^localhost$ ^10\\\\.1$')")
    home.start()
    assert home.get_sxp("/xend/")[0] == "ls"


@pytest.mark.parametrize("listener", ["http_port", "event_port"])
def test_port_in_use_fails_start_with_one_clear_line(
    xend_home: Callable[..., XendHome], listener: str
) -> None:
    home = xend_home("(xend-debug-tcp yes)" if listener == "event_port" else "")
    port = getattr(home, listener)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        started = home.xend("start")
    assert started.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in started.stderr
    assert home.xend("status").returncode == 3
    assert not home.pid_file.exists()


def test_malformed_config_stops_start_naming_file_line_column(
    xend_home: Callable[..., XendHome],
) -> None:
    home = xend_home()
    home.config_file.write_text("(xend-port 8000)\n(logfile /tmp/x\n")
    started = home.xend("start")
    assert started.returncode != 0
    assert re.search(rf"{re.escape(str(home.config_file))}:\d+:\d+: ", started.stderr)


def test_foreground_logs_to_stderr_and_stops_on_sigterm(
    xend_home: Callable[..., XendHome],
) -> None:
    home = xend_home()
    process = subprocess.Popen(
        [*xend_command(), "--config", str(home.config_file), "start", "--foreground"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        wait_for(lambda: _answers(home), timeout=30, what="xend to serve HTTP")
        assert home.get_sxp("/xend/")[0] == "ls"
        assert int(home.pid_file.read_text()) == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        stderr = process.stderr.read()
    finally:
        process.kill()
    assert re.search(r"^\[xend\] INFO \(daemon:\d+\) Xend Daemon started", stderr, re.MULTILINE)
    assert "Xend Daemon stopped" in stderr


def _answers(home: XendHome) -> bool:
    try:
        with home.http() as client:
            return client.get("/xend/").status_code == 200
    except httpx.TransportError:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(("option", "value", "said"), [
    ("vif-script", "'vif-nowhere mode=x'", "(vif-script 'vif-nowhere mode=x'): no script "
                                          "vif-nowhere in /etc/xen/scripts or among xend's own"),
    ("network-script", "'network netdev=\"eth0'",
     "network-script: cannot split 'network netdev=\"eth0' as a shell would: "
     "no closing quotation"),
])
def test_a_missing_script_or_a_bad_split_stops_start_naming_the_option(
    xend_home: Callable[..., XendHome], option: str, value: str, said: str,
) -> None:
    home = xend_home(f"(vif-bridge xen-br0)\n({option} {value})\n")
    started = home.xend("start")
    assert started.returncode == 1
    [line] = started.stderr.splitlines()
    assert line.startswith(f"Error: {home.config_file}:") and said in line, line
    assert not home.pid_file.exists()
