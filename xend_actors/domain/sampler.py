"""The Sampler actor: every ``sample-interval`` seconds, one batched sample of every domain.

A timer thread tells the actor ``sample`` once a period; the actor asks the Hypervisor
for every domain's counters in one driver call (``Driver.counters``: one simhv round
trip, or qemu's table, one ``query-blockstats`` a guest and one netlink dump) and the
Consoles for their output, reads the vbds' names from the table's snapshot (asking no
one), and adds the sample to ``Samples``, which the web reads. A sample that fails (the
hypervisor's helper restarting) is skipped, said once in the log until one works again.
"""

from __future__ import annotations

import logging
import threading
import time

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from xend_actors.actors import ask, proxy_of
from xend_actors.console.hub import ConsolesProxy
from xend_actors.device.info import VbdInfo
from xend_actors.domain.samples import Sample, Samples
from xend_actors.domain.view import TableView
from xend_actors.errors import XendError
from xend_actors.hypervisor.actor import HypervisorProxy
from xend_actors.trace import TracedActor

log = logging.getLogger(__name__)


class Sampler(TracedActor):
    def __init__(self, samples: Samples, hypervisor: HypervisorProxy,
                 consoles: ConsolesProxy, view: TableView) -> None:
        super().__init__()
        self._samples = samples
        self._hypervisor = hypervisor
        self._consoles = consoles
        self._view = view
        self._stopping = threading.Event()
        self._failing = False

    def on_start(self) -> None:
        if self._samples.interval > 0:
            me = proxy_of(self.actor_ref, SamplerProxy)
            threading.Thread(target=self._tick, args=(me,), name="sampler",
                             daemon=True).start()

    def on_stop(self) -> None:
        self._stopping.set()

    def _tick(self, me: SamplerProxy) -> None:
        """Tell the actor to sample at each period's start, the first at once; a late
        sample does not move the next ones."""
        interval = self._samples.interval
        due = time.monotonic()
        while not self._stopping.wait(max(0.0, due - time.monotonic())):
            try:
                me.sample().get(timeout=interval * 4)
            except pykka.ActorDeadError:
                return
            except pykka.Timeout:
                log.warning("A sample took over %g s", interval * 4)
            now = time.monotonic()
            due += interval * max(1, int((now - due) // interval) + 1)

    def sample(self) -> Sample | None:
        """Sample every domain now; the sample, or None if it failed."""
        timeout = max(1.0, self._samples.interval)
        try:
            counters = ask(self._hypervisor.counters(), "the hypervisor", timeout)
            consoles = ask(self._consoles.output_totals(), "the consoles", timeout)
        except XendError as error:
            if not self._failing:
                log.warning("Sampling the domains failed: %s (retried each period)",
                            error.message)
            self._failing = True
            return None
        if self._failing:
            log.info("Sampling the domains works again")
            self._failing = False
        by_id = self._view.current().by_id
        names = {}
        for domain in counters:
            listed = by_id.get(domain.domain.domid) if domain.vbds else None
            if listed is not None:
                names[listed.record.domid] = {d.vdev: d.dev for d in listed.record.devices
                                              if isinstance(d, VbdInfo)}
        return self._samples.add(time.time(), counters, consoles, names)


class SamplerProxy(ActorMemberMixin, pykka.ActorProxy[Sampler]):
    sample = proxy_method(Sampler.sample)
