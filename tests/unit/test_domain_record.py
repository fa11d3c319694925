"""A domain's store record (domain/record.py) reads back as written, the intents a xend
stopped midway must find included: a hot-plug, a device destroy, a vif's change."""

from __future__ import annotations

import pytest

from xend_actors import sxp
from xend_actors.device.config import VifConfig
from xend_actors.device.info import VifInfo
from xend_actors.domain import record
from xend_actors.domain.config import parse_domain_config
from xend_actors.domain.record import DomainRecord, VifChange
from xend_actors.errors import BadRequest

CONFIG = parse_domain_config(sxp.parse("(vm (name r1) (memory 32) (image (linux (kernel /k))) "
                                       "(device (vif (mac aa:00:00:00:00:01))))"))
VIF = VifInfo(0, "aa:00:00:00:00:01", "vif3.0", "xen-br0", "vif-bridge")


def test_a_record_with_every_intent_reads_back_as_written() -> None:
    written = DomainRecord(
        3, "r1", CONFIG, start_time=10.0, console_port=9603, devices=(VIF,),
        plugging=VifConfig("aa:00:00:00:00:02", bridge="br1"), unplugging=VIF,
        configuring=VifChange(0, VifConfig("aa:00:00:00:00:01", bridge="br2",
                                           ips=("10.0.0.9",))), ending=True)
    text = sxp.show(record.store_sxpr(written, 20.0))
    assert "(configuring 0 (vif (mac aa:00:00:00:00:01) (bridge br2) (ip 10.0.0.9)))" in text
    assert record.from_sxpr(sxp.parse(text)) == written


@pytest.mark.parametrize("change", [
    "(configuring x (vif (mac aa:00:00:00:00:01)))",
    "(configuring 0 (vbd (uname file:/d) (dev sda1) (mode w)))",
    "(configuring 0)",
])
def test_a_malformed_change_is_a_bad_record(change: str) -> None:
    text = sxp.show(record.store_sxpr(DomainRecord(3, "r1", CONFIG), 20.0))
    with pytest.raises(BadRequest, match="bad domain record"):
        record.from_sxpr(sxp.parse(text[:-1] + " " + change + ")"))
