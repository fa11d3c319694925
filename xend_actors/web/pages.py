"""The HTML admin pages: which page each URL shows a browser, and what goes on it.

``PAGES`` is the one table of page choices, keyed by the URL rule of ``routes.py``. A
URL without an entry gets the generic page: its value pretty-printed and a form for
each op its resource declares. A page is built only from what xend's own URLs answer
(``View.fetch``), the same SXP a program reads, so pages follow the HTTP interface and
never reach into an actor; the one exception is the event bus's last number
(``View.last_event``), which no URL tells.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug import Request, Response

from xend_actors import __version__, sxp
from xend_actors.console.info import ConsoleInfo
from xend_actors.domain.record import DomainInfo
from xend_actors.errors import XendError
from xend_actors.pool.view import PoolDomain, PoolHost, PoolState
from xend_actors.web.login import HOME
from xend_actors.web.page_format import (
    console_text,
    cpu_seconds,
    duration,
    event_time,
    state_words,
)
from xend_actors.web.page_samples import domain_samples, host_cpu
from xend_actors.web.resource import Answer, Resource, wire

_STARTED = time.monotonic()  # imported when xend starts: the web layer's uptime is xend's
SCROLLBACK_BYTES = 16 * 1024  # of a console shown on a page
TEXT_BYTES = 256 * 1024  # of the log or dmesg shown on a page
RECENT_EVENTS = 100
DOMAIN_EVENTS = 20


@dataclass(frozen=True)
class Problem:
    """An op that failed, shown beside its form with what the user had typed."""

    form: str
    message: str
    kept: Mapping[str, str]


@dataclass(frozen=True)
class View:
    """What a page is made from: the URL's own answer and a way to ask for others."""

    request: Request
    resource: Resource
    value: Answer
    url_args: Mapping[str, Any]
    fetch: Callable[[str], Answer]  # GET another xend URL's value
    fetch_raw: Callable[[str], Response]  # GET another xend URL's raw response
    last_event: int | None  # the number of the last event when the page was asked for


@dataclass(frozen=True)
class Page:
    template: str
    context: Callable[[View], dict[str, Any]]


def login_page(view: View) -> dict[str, Any]:
    return {"next": sxp.child_value(view.value, "next", HOME)}


def index_page(view: View) -> dict[str, Any]:
    return {"children": sxp.children(view.value)}


def node_page(view: View) -> dict[str, Any]:
    node = view.value

    def field(name: str) -> str:
        return str(sxp.child_value(node, name, "?"))

    rows = [
        ("Host", field("host")),
        ("System", f"{field('system')} {field('release')} {field('version')}"),
        ("Machine", field("machine")),
        ("CPUs", f"{field('cores')} cores, {field('hyperthreads_per_core')} threads per "
                 f"core, {field('cpu_mhz')} MHz"),
        ("Memory", f"{field('memory')} MB, {field('free_memory')} MB free"),
        ("Host uptime", _host_uptime()),
        ("xend version", __version__),
        ("xend uptime", duration(time.monotonic() - _STARTED)),
    ]
    return {"rows": rows}


def _host_uptime() -> str:
    try:
        return duration(float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return "unknown"


@dataclass(frozen=True)
class DomainRow:
    """One domain as the pages show it."""

    name: str
    id: str
    state: str
    state_words: str
    memory: str
    vcpus: str
    cpu_time: str
    console_port: str | None
    console_tcp: bool  # its raw TCP port is open (console-tcp yes): telnet reaches it
    uptime: str
    paused: bool
    guest: bool  # Domain-0 is the host: it is not paused or destroyed from here


def domain_row(info: DomainInfo) -> DomainRow:
    hv = info.hv
    state = hv.state.letters if hv is not None else "-----"
    reason = hv.shutdown_reason.value if hv is not None and hv.shutdown_reason else None
    if hv is not None and hv.state.shutdown and reason is None:
        reason = "?"
    console = info.console.port if info.console is not None else None
    memory = info.memory_mb
    # The info has no vcpus; a config may name them (xend takes one).
    vcpus = sxp.child_value(info.config.sxpr, "vcpus") if info.config is not None else None
    return DomainRow(
        name=info.name,
        id=str(info.domid),
        state=state,
        state_words=state_words(state, reason),
        memory=str(memory) if memory is not None else "?",
        vcpus=str(vcpus or 1),
        cpu_time=cpu_seconds(hv.cpu_time) if hv is not None else "",
        console_port=str(console) if console is not None else None,
        console_tcp=info.console is not None and info.console.tcp,
        uptime=duration(info.up_time) if info.up_time is not None else "",
        paused=info.paused,
        guest=info.domid != 0,
    )


def _infos(value: object) -> list[DomainInfo]:
    return [info for info in value if isinstance(info, DomainInfo)] \
        if isinstance(value, list) else []


def domains_page(view: View) -> dict[str, Any]:
    rows = sorted((domain_row(info) for info in _infos(view.fetch("/xend/domain/?detail=1"))),
                  key=lambda row: (len(row.id), row.id))
    sampling, cpu = host_cpu(view.fetch)
    return {"domains": rows, "sampling": sampling, "cpu": cpu}


def domain_page(view: View) -> dict[str, Any]:
    info = view.value
    if not isinstance(info, DomainInfo):
        raise XendError(f"{view.request.path} answered no domain")
    row = domain_row(info)
    config = info.config.sxpr if info.config is not None else None
    devices = [(sxp.name(device), sxp.child_value(device, "idx"), sxp.pretty(device))
               for device in (device.sxpr() for device in info.record.devices)]
    scrollback = _scrollback(view, row.console_port) if row.console_port else None
    events = [event for event in _recent_events(view, RECENT_EVENTS * 10)
              if _concerns(event, row)][-DOMAIN_EVENTS:]
    return {"domain": row, "config": sxp.pretty(config) if config else None,
            "devices": devices, "scrollback": scrollback, "events": events[::-1],
            "sampling": domain_samples(view.fetch, row.name),
            "host": view.request.host.rsplit(":", 1)[0]}


def _concerns(event: dict[str, str], row: DomainRow) -> bool:
    value = event["parsed"]
    if event["name"].startswith("xend.domain"):
        return isinstance(value, list) and value[:2] == [row.name, row.id]
    if event["name"].startswith("xend.console") and row.console_port:
        first = value[0] if isinstance(value, list) and value else value
        return first == row.console_port
    return False


def _scrollback(view: View, port: str) -> str | None:
    try:
        reply = view.fetch_raw(f"/xend/console/{port}/log")
    except XendError:
        return None
    return console_text(reply.get_data()[-SCROLLBACK_BYTES:])


def consoles_page(view: View) -> dict[str, Any]:
    names = {info.domid: info.name for info in _infos(view.fetch("/xend/domain/?detail=1"))}
    consoles = [_console(info, names) for info in _console_infos(
        view.fetch("/xend/console/?detail=1"))]
    return {"consoles": sorted(consoles, key=lambda console: int(console["port"]))}


def _console_infos(value: object) -> list[ConsoleInfo]:
    return [info for info in value if isinstance(info, ConsoleInfo)] \
        if isinstance(value, list) else []


def _console(info: ConsoleInfo, names: Mapping[int, str]) -> dict[str, Any]:
    return {"port": str(info.port), "status": info.status.value, "tcp": info.tcp,
            "domid": str(info.domid), "domain": names.get(info.domid, ""),
            "connected": f"{info.client[0]} {info.client[1]}" if info.client else None}


def console_page(view: View) -> dict[str, Any]:
    if not isinstance(view.value, ConsoleInfo):
        raise XendError(f"{view.request.path} answered no console")
    console = _console(view.value, {})
    return {"console": console, "scrollback": _scrollback(view, console["port"]),
            "host": view.request.host.rsplit(":", 1)[0]}


def events_page(view: View) -> dict[str, Any]:
    events = _recent_events(view, RECENT_EVENTS)
    # The list may hold events newer than last_event; the live script goes on after them.
    last = max([view.last_event or 0, *(int(event["seq"]) for event in events)])
    return {"events": events[::-1], "last_event": last}


def _recent_events(view: View, count: int) -> list[dict[str, Any]]:
    if view.last_event is None:
        return []
    since = max(0, view.last_event - count)
    records = wire(view.fetch(f"/xend/event/?since={since}&timeout=0"))
    return [_event(record) for record in records if isinstance(record, list)]


def _event(record: sxp.Value) -> dict[str, Any]:
    value = sxp.child_value(record, "value", "")
    return {"seq": str(sxp.child_value(record, "seq", "")),
            "time": event_time(sxp.child_value(record, "time")),
            "name": str(sxp.child_value(record, "name", "")),
            "value": sxp.show(value), "parsed": value}


def vnets_page(view: View) -> dict[str, Any]:
    """The vnet ids as links and their configs; whatever shape the list comes in."""
    value = wire(view.value)
    items = value if isinstance(value, list) else [value]
    ids = [item for item in items if isinstance(item, str)]
    configs = [item for item in items if isinstance(item, list)]
    if ids and not configs:
        try:
            detail = view.fetch("/xend/vnet/?detail=1")
        except XendError:
            detail = []
        configs = [item for item in detail if isinstance(item, list)] if isinstance(
            detail, list) else []
    return {"ids": ids, "shown": [sxp.pretty(config) for config in configs]}


def pool_page(view: View) -> dict[str, Any]:
    """The pool's hosts and domains; a domain of this member's links to its page."""
    pool = view.value
    if not isinstance(pool, PoolState):
        raise XendError(f"{view.request.path} answered no pool")
    return {"pool": pool, "hosts": [_pool_host(host) for host in pool.hosts],
            "domains": [_pool_domain(domain, pool.member) for domain in pool.domains]}


def _pool_host(host: PoolHost) -> dict[str, Any]:
    entry = host.entry
    room = {"free": f"{entry.free_mb} MB", "cpus": entry.cpus, "load": entry.load,
            "api": entry.api} if entry else {}
    return {"name": host.name, "state": host.state.value, "domains": host.domains, **room}


def _pool_domain(domain: PoolDomain, member: str) -> dict[str, Any]:
    summary = domain.summary
    shown = {"id": summary.domid, "state": summary.state,
             "state_words": state_words(summary.state), "memory": f"{summary.memory_mb} MB",
             "vcpus": summary.vcpus, "ha": "yes" if summary.ha else "no"} if summary else {
        "state_words": "not yet known"}
    return {"name": domain.name, "host": domain.host, "here": domain.host == member,
            **shown}


def text_page(title: str) -> Callable[[View], dict[str, Any]]:
    def context(view: View) -> dict[str, Any]:
        text = str(view.value)
        cut = len(text) > TEXT_BYTES
        return {"title": title, "text": text[-TEXT_BYTES:], "cut": cut}

    return context


def generic_page(view: View) -> dict[str, Any]:
    """Any other URL: its value and a form for each op its resource declares."""
    value = wire(view.value)
    shown = value if isinstance(value, str) else sxp.pretty(value)
    ops, seen = [], set()
    for declared in view.resource.ops.values():
        if declared.handler not in seen:
            seen.add(declared.handler)
            ops.append({"name": declared.name, "params": [p.name for p in declared.params]})
    return {"shown": shown, "ops": ops}


GENERIC = Page("value.html", generic_page)

PAGES: Mapping[str, Page] = {
    "/xend/": Page("index.html", index_page),
    "/xend/login": Page("login.html", login_page),
    "/xend/node/": Page("node.html", node_page),
    "/xend/node/log": Page("text.html", text_page("xend log")),
    "/xend/node/dmesg": Page("text.html", text_page("Hypervisor console (dmesg)")),
    "/xend/domain/": Page("domains.html", domains_page),
    "/xend/domain/<path:dom>/": Page("domain.html", domain_page),
    "/xend/console/": Page("consoles.html", consoles_page),
    "/xend/console/<int:port>/": Page("console.html", console_page),
    "/xend/event/": Page("events.html", events_page),
    "/xend/vnet/": Page("vnets.html", vnets_page),
    "/xend/pool/": Page("pool.html", pool_page),
}
