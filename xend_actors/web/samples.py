"""The samples API: ``/xend/samples/`` (every domain's latest sample and rates) and
``/xend/domain/<dom>/samples`` (one domain's rates over the last hour), read from
``Samples`` without asking any actor.

``GET /xend/samples/`` answers::

    (samples (seq N) (time T) (interval S)
      (domain (name web1) (id 3) (state -b---) (vcpus 1) (cpu_time 12.5)
              (memory BYTES) (maxmem BYTES) (console_bytes N)
              (vbd_read_bytes N) (vbd_write_bytes N) (vbd_reads N) (vbd_writes N)
              (vif_rx_bytes N) (vif_tx_bytes N) (vif_rx_packets N) (vif_tx_packets N)
              (rates (cpu F) (vbd_read F) (vbd_write F) (vif_rx F) (vif_tx F)))
      ...)

the counters summed over each domain's devices, its ``rates`` over the last period
(cpu: a share of one cpu, 1.0 for a cpu busy all the time; the others bytes a second;
absent in a domain's first sample); ``(seq -1)`` and no domains before the first
sample. With ``?history=1`` each domain also has its ``(history ...)`` as below
(``&last=N``: its last N samples only; the list page's sparklines ask for that).

``GET /xend/domain/<dom>/samples[?since=SEQ][&last=N]`` answers the domain's ``history``::

    (history (domain web1) (id 3) (seq LAST) (interval S) (time T1 T2 ...)
             (cpu F1 F2 ...) (memory ...) (vbd_read ...) (vbd_write ...)
             (vif_rx ...) (vif_tx ...))

one value a sample, oldest first, after ``since`` (all it has without it: an hour at
5 s) and among the last ``last`` samples xend took (the page's table of recent samples
asks for 12); a value the sample could not tell is ``nan``. A domain without samples
yet answers ``(seq -1)`` and empty lists; one xend does not have is a 404.

``GET /xend/samples/`` with ``Accept: text/event-stream`` is a stream of Server-Sent
Events, one a sample for every domain (``id: SEQ``, ``event: sample``, ``data:`` the
``(samples ...)`` above on one line, without history), from the next sample on (or the
latest at once, if newer than ``Last-Event-ID``), for ten minutes at most; the client
then reconnects. Such streams wait on threads of their own, at most ``xend-max-waiting``
at once, as the event stream's do. Both take ``?domain=NAME``: that domain's reading only (a
domain's page follows its own samples without every other domain's).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from wsgiref.types import WSGIEnvironment

from werkzeug import Request, Response

from xend_actors import sxp
from xend_actors.domain.samples import SERIES, History, Reading, Sample
from xend_actors.domain.view import TableView
from xend_actors.errors import BadRequest, XendError
from xend_actors.web.resource import Resource
from xend_actors.web.services import Services

SSE_MIMETYPE = "text/event-stream"
STREAM_LIFETIME = 600.0  # seconds a stream lasts at most; the client then resumes
HEARTBEAT = 15.0  # seconds between keep-alive comments, which find closed streams
RETRY_MS = 2000  # the reconnection delay a stream asks of its client
_RATES = ("cpu", "vbd_read", "vbd_write", "vif_rx", "vif_tx")
_TOTALS = ("vbd_read_bytes", "vbd_write_bytes", "vbd_reads", "vbd_writes",
           "vif_rx_bytes", "vif_tx_bytes", "vif_rx_packets", "vif_tx_packets")


class SamplesResource(Resource):
    """``/xend/samples/``."""

    def __init__(self, services: Services) -> None:
        self.samples = services.samples
        self._most = services.config.max_waiting
        self._watchers = threading.BoundedSemaphore(self._most)

    def get(self, request: Request, **url_args: Any) -> HostSamples | Response:
        if SSE_MIMETYPE in request.headers.get("Accept", ""):
            return self._stream(request)
        sample = _only(self.samples.latest() if self.samples is not None else None,
                       request.args.get("domain"))
        histories = {}
        if request.args.get("history") == "1" and sample is not None and \
                self.samples is not None:
            since = _since(request, sample.seq)
            for reading in sample.readings:
                found = self.samples.history(reading.domid, since)
                if found is not None:
                    histories[reading.domid] = found
        return HostSamples(self._interval, sample, histories)

    @property
    def _interval(self) -> float:
        return self.samples.interval if self.samples is not None else 0.0

    def _stream(self, request: Request) -> Response:
        header = request.headers.get("Last-Event-ID", "").strip()
        if header and not header.isdigit():
            raise BadRequest(f"Last-Event-ID: expected a sample's number, got {header[:40]!r}")
        latest = self.samples.latest() if self.samples is not None else None
        since = int(header) if header else (latest.seq if latest is not None else -1)
        if not self._watchers.acquire(blocking=False):
            raise XendError(f"already {self._most} clients waiting for samples; "
                            "try again later", status=503)
        response = Response(self._events(since, request.args.get("domain")),
                            mimetype=SSE_MIMETYPE,
                            headers={"Cache-Control": "no-cache"})
        response.call_on_close(self._watchers.release)
        return response

    def _events(self, since: int, domain: str | None) -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        end = time.monotonic() + STREAM_LIFETIME
        while self.samples is not None and (left := end - time.monotonic()) > 0:
            sample = self.samples.wait_newer(since, min(HEARTBEAT, left))
            if sample is None:
                yield ": keep-alive\n\n"
                continue
            since = sample.seq
            shown = HostSamples(self._interval, _only(sample, domain)).sxpr()
            # show() prints one line whatever the text holds: no field breaks the framing.
            yield f"id: {sample.seq}\nevent: sample\ndata: {sxp.show(shown)}\n\n"


@dataclass(frozen=True)
class HostSamples:
    """``/xend/samples/``'s answer, made SXP only when it leaves xend: the list page reads
    each domain's rates from ``sample`` as they are."""

    interval: float
    sample: Sample | None  # None before the first
    histories: Mapping[int, History] = field(default_factory=dict)  # by domid, if asked

    def sxpr(self) -> sxp.Value:
        if self.sample is None:
            return ["samples", ["seq", "-1"], ["interval", _number(self.interval)]]
        domains = []
        for reading in self.sample.readings:
            value = _reading(reading)
            found = self.histories.get(reading.domid)
            if found is not None:
                value.append(_history(found, self.interval))
            domains.append(value)
        return ["samples", ["seq", str(self.sample.seq)], ["time", _number(self.sample.time)],
                ["interval", _number(self.interval)], *domains]


class DomainSamplesResource(Resource):
    """``/xend/domain/<dom>/samples``."""

    def __init__(self, services: Services) -> None:
        self.samples = services.samples
        self.view: TableView = services.view

    def get(self, request: Request, dom: str = "", **url_args: Any) -> sxp.Value:
        listed = self.view.current().find(dom)  # NotFound (404) for an unknown domain
        latest = self.samples.latest() if self.samples is not None else None
        since = _since(request, latest.seq if latest is not None else -1)
        interval = self.samples.interval if self.samples is not None else 0.0
        domid = listed.record.domid
        found = self.samples.history(domid, since) if self.samples is not None else None
        if found is None or found.name != listed.record.name:
            found = History(listed.record.name, domid, -1, (),
                            {series: () for series in SERIES})
        return _history(found, interval)


def waits(environ: WSGIEnvironment) -> bool:
    """Whether a request is a stream of samples: the server answers it on a thread of its
    own, never a worker (``http_loop``)."""
    return environ.get("PATH_INFO", "").rstrip("/") == "/xend/samples" and \
        SSE_MIMETYPE in environ.get("HTTP_ACCEPT", "")


def _only(sample: Sample | None, domain: str | None) -> Sample | None:
    """``sample`` with domain ``domain``'s reading only (none if it has none), or whole."""
    if sample is None or domain is None:
        return sample
    return replace(sample, readings=tuple(r for r in sample.readings if r.name == domain))


def _since(request: Request, last_seq: int) -> int:
    """The seq after which a history starts: ``since``, moved on to keep only the ``last``
    samples up to ``last_seq`` (the latest)."""
    since = _integer(request, "since", "a sample's number")
    last = _integer(request, "last", "a number of samples, 0 or more")
    if last is not None and last < 0:
        raise BadRequest(f"last must be a number of samples, 0 or more, got {last}")
    since = -1 if since is None else since
    return since if last is None else max(since, last_seq - last)


def _integer(request: Request, name: str, what: str) -> int | None:
    text = request.args.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name} must be {what}, got {text[:40]!r}") from None


def _reading(reading: Reading) -> list[Any]:
    hv = reading.counters.domain
    value: list[Any] = [
        "domain", ["name", hv.name], ["id", str(hv.domid)], ["state", hv.state.letters],
        ["vcpus", str(hv.vcpus)], ["cpu_time", _number(hv.cpu_time)],
        ["memory", str(hv.memory_kb * 1024)], ["maxmem", str(hv.maxmem_kb * 1024)],
        ["console_bytes", str(reading.console_bytes)],
        *([name, str(total)] for name, total in zip(_TOTALS, reading.totals(), strict=True))]
    rates = dict(zip(SERIES, reading.rates, strict=True))
    known = [[name, _number(rates[name])] for name in _RATES if not math.isnan(rates[name])]
    if known:
        value.append(["rates", *known])
    return value


def _history(history: History, interval: float) -> list[Any]:
    return ["history", ["domain", history.name], ["id", str(history.domid)],
            ["seq", str(history.last_seq)], ["interval", _number(interval)],
            ["time", *(_number(t) for t in history.times)],
            *([series, *(_number(v) for v in history.series[series])] for series in SERIES)]


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.12g}"
