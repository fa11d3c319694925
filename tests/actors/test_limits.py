"""A xend at the host's limits refuses a new domain whole, saying which limit to raise;
a domain holds as few of xend's open files as it can.

The process's open-file limit is lowered below what one more domain needs (its files
beside ``limits.FILES_SPARE`` for connections); the create is answered 503 with the
limit named, and nothing of it is left: no domain in the hypervisor or the table, no
intent in the store. With the limit back, the same create succeeds.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

import pytest

from tests.actors.xend import KERNEL, InProcessXend, xend_in_process
from tests.support.processes import wait_for
from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError
from xend_actors.limits import FILES_PER_DOMAIN, FILES_SPARE


@pytest.fixture
def xend() -> Iterator[InProcessXend]:
    with xend_in_process("(xend-unix-server yes)\n") as started:
        yield started


def vm(name: str) -> sxp.Value:
    return ["vm", ["name", name], ["memory", "32"], ["image", ["linux", ["kernel", KERNEL]]]]


def test_a_create_past_the_open_file_limit_is_refused_whole(xend: InProcessXend) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with XendClient(unix_path=xend.config.unix_path) as client:
        client.xend_domain_create(vm("before"))
        in_use = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (in_use + FILES_SPARE + FILES_PER_DOMAIN - 1, hard))
        try:
            with pytest.raises(XendError) as refused:
                client.xend_domain_create(vm("past"))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert refused.value.status == 503
        assert "ulimit -n" in refused.value.message, refused.value.message
        assert "past" not in client.xend_domains()
        assert "past" not in [d.name for d in xend.host.call(xend.host.hv.list_domains)]
        assert list((xend.config.dbroot / "intent").glob("*")) == []
        created = client.xend_domain_create(vm("past"))  # room again
        assert sxp.child_value(created, "name") == "past"


def test_a_console_keeps_its_scrollback_on_disk_without_holding_the_file_open(
        xend: InProcessXend) -> None:
    with XendClient(unix_path=xend.config.unix_path) as client:
        client.xend_domain_create(vm("talker"))
        client.xend_domain_unpause("talker")
    folder = xend.config.run_dir / "state" / "console"
    # The guest's boot messages reach the file (past its 4096-byte header) ...
    wait_for(lambda: any(f.stat().st_size > 4096 for f in folder.glob("*.log")),
             what="the guest's boot messages in its scrollback file")
    # ... which no descriptor of the process holds between writes.
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            continue
    assert not [path for path in held if path.startswith(str(folder))], held
