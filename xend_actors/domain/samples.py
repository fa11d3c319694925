"""The domains' samples: the latest batch whole, and each domain's last hour in a ring.

The Sampler (``sampler.py``) adds one ``Sample`` a period: every domain's ``Reading``
(the hypervisor's counters, its console's bytes, its vbds' names) at one time. From the
last two it works out each domain's rates over the period (``SERIES``: the cpu used as a
share of one cpu, memory in bytes, vbd and vif bytes a second) and keeps them in that
domain's ``Ring``: ``history`` samples (an hour at 5 s) of six half floats, 8.4 KiB a
domain, made whole at its first sample, where the counters themselves are kept only for
the latest sample (``/metrics`` and the rates need no more). A domain the hypervisor no
longer lists loses its ring; one whose id comes back under another name starts anew.

Web threads read ``latest()`` (a frozen value, swapped whole) with no lock, and a
domain's ``history`` under a lock the sampler holds only while it writes; a stream of
samples waits for the next in ``wait_newer``.
"""

from __future__ import annotations

import math
import struct
import threading
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xend_actors.hypervisor.base import DomainCounters

SERIES = ("cpu", "memory", "vbd_read", "vbd_write", "vif_rx", "vif_tx")
_WIDTH = len(SERIES)
NAN = math.nan
HALF_MAX = 65504.0  # the largest half float
_ROW = struct.Struct(f"<{len(SERIES)}e")
_UNITS = (1.0, float(1 << 30), *(float(1 << 20),) * 4)  # SERIES' units in a ring
_EMPTY = _ROW.pack(*(NAN,) * len(SERIES))


@dataclass(frozen=True, slots=True)
class Reading:
    """One domain in a sample: its counters, its console's output so far and the names of
    its vbds (in the order of ``counters.vbds``), and its rates over the last period
    (``SERIES``' order; NaN for a domain first seen in this sample)."""

    counters: DomainCounters
    console_bytes: int
    vbd_names: tuple[str, ...]
    rates: tuple[float, ...]

    @property
    def name(self) -> str:
        return self.counters.domain.name

    @property
    def domid(self) -> int:
        return self.counters.domain.domid

    def totals(self) -> tuple[int, int, int, int, int, int, int, int]:
        """The devices' counters summed: vbd read and write bytes, read and write ops,
        vif rx and tx bytes, rx and tx packets."""
        return _totals(self.counters)


@dataclass(frozen=True, slots=True)
class Sample:
    """Every domain at one time: ``seq`` counts the samples since xend started."""

    seq: int
    time: float  # the wall clock's
    interval: float  # the configured period
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class History:
    """One domain's rates at each sample it has, oldest first (``series[name]``)."""

    name: str
    domid: int
    last_seq: int
    times: tuple[float, ...]
    series: Mapping[str, tuple[float, ...]]


class Ring:
    """One domain's rates, ``capacity`` samples of ``SERIES`` as half floats, the oldest
    dropped: 12 bytes a sample. Each series is kept in a unit that fits a half float's
    range (to 65504) with its three significant digits: the cpu share as it is, memory
    in GiB, the rates in MiB a second (a byte a second is still told from none)."""

    __slots__ = ("first", "last", "name", "values")

    def __init__(self, name: str, seq: int, capacity: int) -> None:
        self.name = name
        self.first = seq  # the seq of its first sample
        self.last = seq - 1  # the seq of its last
        # Made whole at once: a thousand rings growing side by side left the heap in
        # holes (RSS 29 KiB a domain for 17 KiB of float32s).
        self.values = bytearray(_EMPTY * capacity)

    def add(self, seq: int, rates: Sequence[float], capacity: int) -> None:
        at = (seq - self.first) % capacity * _ROW.size
        _ROW.pack_into(self.values, at, *(min(rate / unit, HALF_MAX)
                                          for rate, unit in zip(rates, _UNITS, strict=True)))
        self.last = seq

    def seqs(self, capacity: int) -> range:
        return range(max(self.first, self.last - capacity + 1), self.last + 1)

    def row(self, seq: int, capacity: int) -> tuple[float, ...]:
        at = (seq - self.first) % capacity * _ROW.size
        return tuple(value * unit for value, unit
                     in zip(_ROW.unpack_from(self.values, at), _UNITS, strict=True))


class Samples:
    """The samples of every domain; written by the Sampler, read by anyone."""

    def __init__(self, interval: float, history: int) -> None:
        self.interval = interval
        self.capacity = max(2, history)
        self._latest: Sample | None = None
        self._times = array("d")  # the samples' times, a ring like the domains'
        self._rings: dict[int, Ring] = {}
        self._lock = threading.Lock()
        self._new = threading.Condition(threading.Lock())  # a sample came: its watchers

    def wait_newer(self, seq: int, timeout: float) -> Sample | None:
        """The latest sample if it is newer than ``seq``, waiting up to ``timeout`` s for
        one; None if none came."""
        with self._new:
            self._new.wait_for(lambda: (s := self._latest) is not None and s.seq > seq,
                               timeout)
            latest = self._latest
        return latest if latest is not None and latest.seq > seq else None

    def latest(self) -> Sample | None:
        return self._latest

    def add(self, now: float, domains: Sequence[DomainCounters], consoles: Mapping[int, int],
            vbd_names: Mapping[int, Mapping[int, str]]) -> Sample:
        """A new sample of ``domains`` taken at ``now``; ``consoles`` their consoles' bytes
        and ``vbd_names`` their vbds' names (by domid, then vdev)."""
        before = self._latest
        seq = before.seq + 1 if before is not None else 0
        previous = {r.domid: r for r in before.readings} if before is not None else {}
        elapsed = now - before.time if before is not None else 0.0
        readings = []
        for counters in domains:
            domid = counters.domain.domid
            names = vbd_names.get(domid, {})
            last = previous.get(domid)
            if last is not None and last.name != counters.domain.name:
                last = None  # the id was given to another domain
            readings.append(Reading(
                counters, consoles.get(domid, 0),
                tuple(names.get(v.vdev, str(v.vdev)) for v in counters.vbds),
                _rates(last, counters, elapsed)))
        sample = Sample(seq, now, self.interval, tuple(readings))
        with self._lock:
            self._keep(seq, now, sample.readings)
        self._latest = sample
        with self._new:
            self._new.notify_all()
        return sample

    def _keep(self, seq: int, now: float, readings: Sequence[Reading]) -> None:
        if len(self._times) < self.capacity:  # seq < capacity: its slot is the next
            self._times.append(now)
        else:
            self._times[seq % self.capacity] = now
        seen = set()
        for reading in readings:
            seen.add(reading.domid)
            ring = self._rings.get(reading.domid)
            if ring is None or ring.name != reading.name or ring.last != seq - 1:
                ring = self._rings[reading.domid] = Ring(reading.name, seq, self.capacity)
            ring.add(seq, reading.rates, self.capacity)
        for gone in self._rings.keys() - seen:
            del self._rings[gone]

    def history(self, domid: int, since: int = -1) -> History | None:
        """Domain ``domid``'s rates at each sample after ``since`` that it has; None if
        it has no ring."""
        with self._lock:
            ring = self._rings.get(domid)
            if ring is None:
                return None
            seqs = [seq for seq in ring.seqs(self.capacity) if seq > since]
            times = tuple(self._times[seq % self.capacity] for seq in seqs)
            rows = [ring.row(seq, self.capacity) for seq in seqs]
            name, last = ring.name, ring.last
        columns = tuple(zip(*rows, strict=True)) if rows else ((),) * _WIDTH
        return History(name, domid, last, times,
                       {series: tuple(v if series == "memory" else _plain(v) for v in column)
                        for series, column in zip(SERIES, columns, strict=True)})

    def ring_bytes(self) -> int:
        """The rings' arrays' sizes, summed (for the benchmarks)."""
        with self._lock:
            return sum(len(ring.values) for ring in self._rings.values())


def _totals(c: DomainCounters) -> tuple[int, int, int, int, int, int, int, int]:
    return (sum(v.read_bytes for v in c.vbds), sum(v.write_bytes for v in c.vbds),
            sum(v.read_ops for v in c.vbds), sum(v.write_ops for v in c.vbds),
            sum(v.rx_bytes for v in c.vifs), sum(v.tx_bytes for v in c.vifs),
            sum(v.rx_packets for v in c.vifs), sum(v.tx_packets for v in c.vifs))


def _rates(last: Reading | None, now: DomainCounters, elapsed: float) -> tuple[float, ...]:
    """``now``'s rates since ``last``, in ``SERIES``' order: a counter that went back
    (a rebooted qemu starts its cpu time again, a device replaced) counts from zero."""
    memory = float(now.domain.memory_kb * 1024)
    if last is None or elapsed <= 0:
        return (NAN, memory, NAN, NAN, NAN, NAN)

    def rate(before: float, after: float) -> float:
        return (after - before if after >= before else after) / elapsed

    a, b = last.totals(), _totals(now)
    return (rate(last.counters.domain.cpu_time, now.domain.cpu_time), memory,
            rate(a[0], b[0]), rate(a[1], b[1]), rate(a[4], b[4]), rate(a[5], b[5]))


def _plain(value: float) -> float:
    """A half float's value (times its unit) to its three significant digits (0.01, not
    0.0099945068359375)."""
    return value if math.isnan(value) else float(f"{value:.3g}")
