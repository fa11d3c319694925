"""What the pages show of the samples without JavaScript: a domain's recent samples as
the rows of a table, and every domain's CPU share in the latest sample for the list.

Both are read from the samples API (``/xend/domain/<dom>/samples?last=N`` and
``/xend/samples/``, ``web/samples.py``) through ``View.fetch``, like every other page
value: a bounded number of rows, and one read of the whole host for the list. The
graphs are drawn in the browser by ``static/graphs.js`` from the same URLs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from xend_actors import sxp
from xend_actors.domain.samples import SERIES
from xend_actors.errors import XendError
from xend_actors.web.page_format import byte_size, clock_time, cpu_percent
from xend_actors.web.resource import Answer, wire
from xend_actors.web.samples import HostSamples

Fetch = Callable[[str], Answer]  # View.fetch: GET another xend URL's value
RECENT_SAMPLES = 12  # rows of the domain page's table: a minute at 5 s
_COLUMNS = ("time", "cpu", "memory", "vbd_read", "vbd_write", "vif_rx", "vif_tx")
_CPU = SERIES.index("cpu")


@dataclass(frozen=True)
class SampleRow:
    """One sample of a domain as the page's table shows it."""

    time: str
    cpu: str
    memory: str
    vbd_read: str
    vbd_write: str
    vif_rx: str
    vif_tx: str


@dataclass(frozen=True)
class Sampling:
    """What a page tells of the samples: their period (0: xend samples nothing) and a
    domain's recent ones, newest first."""

    interval: float
    rows: tuple[SampleRow, ...] = ()

    @property
    def every(self) -> str:
        return f"{self.interval:g} s"


def domain_samples(fetch: Fetch, name: str) -> Sampling:
    """Domain ``name``'s last ``RECENT_SAMPLES`` samples; ``fetch`` is ``View.fetch``."""
    try:
        history = wire(fetch(f"/xend/domain/{quote(name, safe='')}/samples"
                             f"?last={RECENT_SAMPLES}"))
    except XendError:
        return Sampling(0.0)  # gone between its page's read and this one
    columns = [sxp.child(history, column, [column])[1:] for column in _COLUMNS]
    rows = [SampleRow(clock_time(t), cpu_percent(cpu), byte_size(memory),
                      byte_size(vbd_read, "/s"), byte_size(vbd_write, "/s"),
                      byte_size(vif_rx, "/s"), byte_size(vif_tx, "/s"))
            for t, cpu, memory, vbd_read, vbd_write, vif_rx, vif_tx in zip(*columns, strict=True)]
    return Sampling(_interval(history), tuple(rows[::-1]))


def host_cpu(fetch: Fetch) -> tuple[Sampling, dict[str, str]]:
    """The samples' period, and each domain's CPU share in the latest sample by name
    (read from the typed answer: no SXP made for a page of many domains)."""
    answer = fetch("/xend/samples/")
    if not isinstance(answer, HostSamples):
        return Sampling(0.0), {}
    readings = answer.sample.readings if answer.sample is not None else ()
    shares = {reading.name: cpu_percent(reading.rates[_CPU]) for reading in readings
              if reading.rates}
    return Sampling(answer.interval), shares


def _interval(value: sxp.Value) -> float:
    try:
        return float(str(sxp.child_value(value, "interval", 0)))
    except ValueError:
        return 0.0
