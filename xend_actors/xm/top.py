"""``xm top``: every domain's state, cpu, memory and I/O rates, live, as Xen's xentop.

It reads xend's samples (``GET /xend/samples/``: one batch for every domain, taken each
``sample-interval``) once a delay, by default that interval. Full screen by default
(curses, imported only here): keys ``n``, ``i``, ``s``, ``c``, ``m``, ``d``, ``t`` sort
by name, id, state (ascending), cpu, memory, disk and network rates (the largest
first; a key again reverses), ``q`` quits. ``-b`` prints rounds as plain text
instead, ``-n N`` that many (batch: for scripts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from xend_actors import sxp
from xend_actors.client import XendClient

STATES = (("r", "running"), ("b", "blocked"), ("p", "paused"), ("s", "shutdown"),
          ("c", "crashed"), ("d", "dying"))
HEADER = (f"{'NAME':<18} {'ID':>5} {'STATE':<6} {'CPU(%)':>7} {'MEM(MiB)':>9} "
          f"{'MAX(MiB)':>9} {'VCPUS':>5} {'VBD_RD':>9} {'VBD_WR':>9} {'NET_RX':>9} "
          f"{'NET_TX':>9}")
RATE_UNIT = "disk and network rates in KiB/s"


@dataclass(frozen=True)
class Row:
    name: str
    domid: int
    state: str
    cpu: float  # percent of one cpu; nan before a domain's second sample
    memory: int  # bytes
    maxmem: int
    vcpus: int
    vbd_read: float  # bytes a second
    vbd_write: float
    net_rx: float
    net_tx: float

    def line(self) -> str:
        return (f"{self.name[:18]:<18} {self.domid:>5} {self.state:<6} {_num(self.cpu, 1):>7} "
                f"{self.memory >> 20:>9} {self.maxmem >> 20:>9} {self.vcpus:>5} "
                f"{_num(self.vbd_read / 1024, 1):>9} {_num(self.vbd_write / 1024, 1):>9} "
                f"{_num(self.net_rx / 1024, 1):>9} {_num(self.net_tx / 1024, 1):>9}")


SORTS: dict[str, tuple[str, Callable[[Row], Any]]] = {
    "n": ("name", lambda r: r.name),
    "i": ("id", lambda r: r.domid),
    "s": ("state", lambda r: r.state),
    "c": ("cpu", lambda r: _key(r.cpu)),
    "m": ("memory", lambda r: r.memory),
    "d": ("disk", lambda r: _key(r.vbd_read) + _key(r.vbd_write)),
    "t": ("network", lambda r: _key(r.net_rx) + _key(r.net_tx)),
}


def rows(sample: sxp.Value) -> list[Row]:
    """The domains of a ``(samples ...)`` reply."""
    found = []
    for domain in sxp.children(sample, "domain"):
        rates = sxp.child(domain, "rates") or ["rates"]

        def rate(name: str, rates: sxp.Value = rates) -> float:
            return float(sxp.child_value(rates, name, "nan"))

        found.append(Row(
            str(sxp.child_value(domain, "name")), int(sxp.child_value(domain, "id")),
            str(sxp.child_value(domain, "state")), rate("cpu") * 100,
            int(sxp.child_value(domain, "memory", "0")),
            int(sxp.child_value(domain, "maxmem", "0")),
            int(sxp.child_value(domain, "vcpus", "0")), rate("vbd_read"), rate("vbd_write"),
            rate("vif_rx"), rate("vif_tx")))
    return found


def summary(sample: sxp.Value, shown: list[Row]) -> str:
    """The first line: when, how many domains, and how many in each state."""
    taken = sxp.child_value(sample, "time")
    clock = time.strftime("%H:%M:%S", time.localtime(float(taken))) if taken else "--:--:--"
    counts = [f"{sum(letter in r.state for r in shown)} {word}" for letter, word in STATES]
    return f"xm top - {clock}   {len(shown)} domains: {', '.join(counts)}"


DESCENDING = frozenset("cmdt")  # the busiest first


def screen(sample: sxp.Value, sort: str, reverse: bool) -> list[str]:
    """The lines of one round: the summary, the header and a row per domain, sorted
    (names, ids and states ascending, the rest the largest first; ``reverse`` flips)."""
    found = rows(sample)
    found.sort(key=SORTS[sort][1], reverse=reverse != (sort in DESCENDING))
    if sxp.child_value(sample, "seq") == "-1":
        note = "(no sample yet: xend samples every sample-interval seconds)"
        return [summary(sample, found), note]
    return [summary(sample, found), HEADER, *(row.line() for row in found)]


def interval_of(sample: sxp.Value) -> float:
    return float(sxp.child_value(sample, "interval", "0")) or 5.0


@click.command()
@click.option("-d", "--delay", type=float, metavar="SECONDS",
              help="Seconds between two rounds (default: xend's sample-interval).")
@click.option("-b", "--batch", is_flag=True, help="Print plain text rounds, not a screen.")
@click.option("-n", "--iterations", type=click.IntRange(min=1), metavar="N",
              help="Stop after N rounds (default: at q, or never in batch mode).")
@click.option("-s", "--sort", "sort", type=click.Choice(sorted(SORTS)), default="n",
              show_default=True,
              help="Sort by n(ame), i(d), s(tate), c(pu), m(emory), d(isk), t (network).")
@click.pass_obj
def top(client: XendClient, delay: float | None, batch: bool, iterations: int | None,
        sort: str) -> None:
    """Show the domains' cpu, memory, disk and network use, live (q quits)."""
    if delay is not None and not (delay > 0 and math.isfinite(delay)):
        raise click.BadParameter("must be a number of seconds above 0", param_hint="'-d'")
    if batch:
        _batch(client, delay, iterations, sort)
    else:
        _live(client, delay, iterations, sort)


def _batch(client: XendClient, delay: float | None, iterations: int | None,
           sort: str) -> None:
    done = 0
    while True:
        sample = client.xend_samples()
        click.echo("\n".join(screen(sample, sort, reverse=False)))
        done += 1
        if iterations is not None and done >= iterations:
            return
        click.echo("")
        time.sleep(delay or interval_of(sample))


def _live(client: XendClient, delay: float | None, iterations: int | None,
          sort: str) -> None:
    import curses  # only the live screen needs it

    def run(window: curses.window) -> None:
        curses.curs_set(0)
        chosen, reverse, done = sort, False, 0
        sample = client.xend_samples()
        due = time.monotonic()
        while True:
            if time.monotonic() >= due:
                sample = client.xend_samples()
                due = time.monotonic() + (delay or interval_of(sample))
                done += 1
            lines = screen(sample, chosen, reverse)
            lines.append(f"keys: n i s c m d t sort ({SORTS[chosen][0]}"
                         f"{', reversed' if reverse else ''}), q quits; {RATE_UNIT}")
            height, width = window.getmaxyx()
            window.erase()
            for at, line in enumerate(lines[:height]):
                window.addnstr(at, 0, line, max(0, width - 1))
            window.refresh()
            if iterations is not None and done >= iterations:
                return
            window.timeout(max(50, int((due - time.monotonic()) * 1000)))
            key = window.getch()
            if key in (ord("q"), ord("Q")):
                return
            if 0 <= key < 256 and chr(key) in SORTS:
                reverse = not reverse if chr(key) == chosen else False
                chosen = chr(key)

    curses.wrapper(run)


def _num(value: float, places: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{places}f}"


def _key(value: float) -> float:
    return -1.0 if math.isnan(value) else value


COMMANDS = (top,)
