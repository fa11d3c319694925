"""Xen's scheduler parameters as a qemu domain's cpu weight and cap (``cgroup.py``).

- bvt and fbvt: a domain's share is inversely proportional to its ``mcuadv`` (Xen's
  default 10); it becomes a cgroup weight, 100 (the default share) at mcuadv 10.
- atropos: ``slice`` ns guaranteed every ``period`` ns. Without ``xtratime`` the domain
  may not use more: a cap of slice/period of one cpu. With it, it may: no cap.
  ``latency`` has no counterpart and is only recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from xend_actors.errors import BadRequest
from xend_actors.hypervisor.base import AtroposParams, BvtParams, FbvtParams, SchedParams
from xend_actors.hypervisor.qemu.cgroup import DEFAULT_WEIGHT, CpuCap

XEN_DEFAULT_MCUADV = 10
WEIGHT_MIN, WEIGHT_MAX = 1, 10000
PERIOD_MIN_US, PERIOD_MAX_US = 1000, 1_000_000  # what both cgroup versions accept
QUOTA_MIN_US = 1000


@dataclass(frozen=True)
class CpuShape:
    """What one set of scheduler parameters asks of the host's scheduler."""

    weight: int | None = None
    cap: CpuCap | None = None
    uncapped: bool = False

    def describe(self) -> str:
        if self.weight is not None:
            return "cpu weight"
        return "cpu cap"


def cpu_shape(params: SchedParams) -> CpuShape:
    if isinstance(params, BvtParams | FbvtParams):
        if params.mcuadv < 1:
            raise BadRequest(f"mcuadv must be at least 1, got {params.mcuadv}")
        weight = round(DEFAULT_WEIGHT * XEN_DEFAULT_MCUADV / params.mcuadv)
        return CpuShape(weight=max(WEIGHT_MIN, min(WEIGHT_MAX, weight)))
    if isinstance(params, AtroposParams):
        if params.period < 1 or not 0 < params.slice <= params.period:
            raise BadRequest(f"atropos needs 0 < slice <= period, got slice {params.slice} "
                             f"and period {params.period} (nanoseconds)")
        if params.xtratime:
            return CpuShape(uncapped=True)
        period_us = max(PERIOD_MIN_US, min(PERIOD_MAX_US, params.period // 1000))
        quota_us = max(QUOTA_MIN_US, params.slice * period_us // params.period)
        return CpuShape(cap=CpuCap(quota_us, period_us))
    raise BadRequest(f"unknown scheduler parameters {params!r}")
