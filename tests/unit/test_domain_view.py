"""The table's snapshot as the web reads it: a domain's text shown from kept pieces is
byte for byte the info's SXP shown, for every shape of info; the pieces are kept
across a new cpu reading and made again for any other change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from xend_actors import sxp
from xend_actors.console.info import ConsoleInfo, Status
from xend_actors.console.view import ConsoleView, ShownConsole
from xend_actors.device.info import VifInfo
from xend_actors.domain.config import parse_domain_config
from xend_actors.domain.record import DomainRecord, RestartState
from xend_actors.domain.view import Listed, Snapshot, TableView
from xend_actors.errors import NotFound
from xend_actors.hypervisor.base import DomainState, HvDomain, ShutdownReason

CONFIG = parse_domain_config(["vm", ["name", "web1"], ["memory", "64"],
                              ["image", ["linux", ["kernel", "/boot/k"]]]])
RUNNING = HvDomain(3, "web 1", DomainState.of(running=True), None, 65536, 65536, 1, 0,
                   12.5)
SHUT = replace(RUNNING, state=DomainState.of(shutdown=True),
               shutdown_reason=ShutdownReason.REBOOT)
CONSOLE = ShownConsole.of(ConsoleInfo(9603, 3, Status.CONNECTED, ("127.0.0.1", 4000)))
VIF = VifInfo(idx=0, mac="aa:00:00:00:00:01", link="vif3.0", bridge="xenbr0",
              script="vif-bridge", ips=("10.0.0.3",))

RECORDS = [
    DomainRecord(3, "web 1"),  # adopted: no config, no start time
    DomainRecord(3, "web 1", CONFIG, start_time=1000.25, console_port=9603),
    DomainRecord(3, "web 1", CONFIG, start_time=1000.0, restart_state=RestartState.PENDING,
                 restart_time=1001.5, devices=(VIF,)),
]


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("hv", [None, RUNNING, SHUT])
@pytest.mark.parametrize("console", [None, CONSOLE])
def test_the_shown_text_is_the_infos_sxp_shown(record: DomainRecord, hv: HvDomain | None,
                                               console: ShownConsole | None) -> None:
    listed = Listed(record, hv)
    for now in (1002.0, 1234.5678):
        info = listed.info(console, now)
        assert listed.show(console, now) == sxp.show(info.sxpr())


def test_pieces_are_kept_for_a_new_cpu_reading_only() -> None:
    listed = Listed(RECORDS[1], RUNNING)
    listed.show(None, 1002.0)
    busier = listed.moved(replace(RUNNING, cpu_time=13.75))
    assert busier._shown is listed._shown
    assert "(cpu_time 13.75)" in busier.show(None, 1002.0)
    paused = listed.moved(replace(RUNNING, state=DomainState.of(paused=True)))
    assert paused._shown is not listed._shown
    assert "(state --p--)" in paused.show(None, 1002.0)
    gone = listed.moved(None)
    assert "(state" not in gone.show(None, 1002.0)


def test_the_view_finds_by_name_then_id_and_lists_in_order() -> None:
    first = Listed(RECORDS[1], RUNNING)
    second = Listed(DomainRecord(7, "7"), None)  # a name that is another's id
    consoles = ConsoleView()
    consoles.publish({3: CONSOLE})
    view = TableView(consoles, clock=lambda: 1010.0)
    view.publish(Snapshot({3: first, 7: second}, {"web 1": 3, "7": 7}))
    info, shown = view.info("3")
    assert info.name == "web 1" and info.console == CONSOLE.info
    assert shown == sxp.show(info.sxpr())
    assert view.info("7")[0].domid == 7
    with pytest.raises(NotFound):
        view.info("web")
    infos, every = view.infos()
    assert [i.domid for i in infos] == [3, 7]
    assert every == sxp.show([i.sxpr() for i in infos])
    names, shown_names = view.names()
    assert names == ["web 1", "7"] and shown_names == sxp.show(names)


@pytest.mark.parametrize("value", [0.0, 12.0, -3.0, 12.5, 1e-07, 123456789012345.0,
                                   1 / 3, 86400.123456789, 2.5e20])
def test_a_moving_value_is_shown_as_sxp_shows_it(value: float) -> None:
    start = 1000.0
    record = replace(RECORDS[1], start_time=start)
    shown = Listed(record, replace(RUNNING, cpu_time=value)).show(None, start + value)
    assert f"(cpu_time {sxp.show(value)})" in shown
    assert f"(up_time {sxp.show(start + value - start)})" in shown
