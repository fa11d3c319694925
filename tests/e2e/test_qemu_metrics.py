"""Metrics of a real guest under qemu (issue 17): its cpu seconds from /proc grow while it
runs, its disk's counters from qemu's ``query-blockstats`` grow when it writes, and its
vif's counters (its tap's, read in one netlink dump) when it sends; read from ``GET
/metrics`` with prometheus_client's own parser and from the samples API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.qemu import QEMU, QemuXend, booted, console
from tests.support.processes import wait_for
from xend_actors import sxp

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")]


def metrics(xend: QemuXend, name: str, **labels: str) -> float | None:
    reply = xend.http.get("/metrics")
    assert reply.status_code == 200, reply.text
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return None


def test_a_qemu_guests_cpu_and_disk_counters_grow(qemu_xend: Callable[..., QemuXend],
                                                   tmp_path: Path) -> None:
    xend = qemu_xend("(qemu-accel tcg)\n(sample-interval 0.5)\n")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    info = xend.create_vm("qm", ["device", ["vbd", ["uname", f"file:{disk}"],
                                            ["dev", "sda1"], ["mode", "w"]]])
    ids = {"domain": "qm", "id": str(sxp.child_value(info, "id"))}
    with console(xend.console_port("qm")) as con:
        booted(con)
        first = wait_for(lambda: metrics(xend, "xend_domain_cpu_seconds_total", **ids),
                         what="qm in a sample")
        assert isinstance(first, float) and first > 0  # its boot took cpu
        wait_for(lambda: (metrics(xend, "xend_domain_cpu_seconds_total", **ids) or 0) > first,
                 timeout=30, what="qm's cpu seconds to grow")

        written = metrics(xend, "xend_domain_vbd_written_bytes_total", device="sda1", **ids)
        assert written is not None
        con.run("dd if=/dev/urandom of=/dev/vda bs=64k count=4 conv=fsync 2>/dev/null;"
                " echo WROTE-$((1))", rb"WROTE-1", 30)
        wait_for(lambda: (metrics(xend, "xend_domain_vbd_written_bytes_total",
                                  device="sda1", **ids) or 0) >= written + 256 * 1024,
                 timeout=30, what="the guest's writes to be counted")
        assert (metrics(xend, "xend_domain_vbd_writes_total", device="sda1", **ids) or 0) > 0

    def rated() -> sxp.Value | None:
        found = sxp.parse(xend.http.get("/xend/samples/").text)
        domain = next((d for d in sxp.children(found, "domain")
                       if sxp.child_value(d, "name") == "qm"), None)
        return domain if domain is not None and sxp.child(domain, "rates") else None

    domain = wait_for(rated, what="qm's rates")
    assert float(sxp.child_value(sxp.child(domain, "rates"), "cpu")) > 0
    assert int(sxp.child_value(domain, "vbd_write_bytes")) >= 256 * 1024
