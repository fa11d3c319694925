"""How far a transfer's stream is: the value of the
``xend.domain.{migrate,save,restore}.progress`` events,
``(progress (phase P) (sent B) (total B) (rate B/s))``, from which ``xm`` draws its
progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from xend_actors import sxp


class Phase(Enum):
    PRECOPY = "precopy"  # the guest runs while its memory goes
    STOPCOPY = "stopcopy"  # the guest is suspended: the rest and its state go
    COMMIT = "commit"  # the destination builds it; the source is destroyed
    SAVE = "save"  # a save: the stopped guest's state goes into the file
    RESTORE = "restore"  # a restore: the state comes back from the file


@dataclass(frozen=True)
class Progress:
    """Bytes sent of those known to go, and the rate."""

    phase: Phase
    sent: int
    total: int
    rate: float  # bytes per second since the stream started

    @classmethod
    def since(cls, started: float, phase: Phase, sent: int, total: int) -> Progress:
        """``sent`` bytes of ``total`` since ``started`` (``time.monotonic()``)."""
        return cls(phase, sent, total, sent / max(time.monotonic() - started, 1e-6))

    def sxpr(self) -> sxp.Value:
        return ["progress", ["phase", self.phase.value], ["sent", str(self.sent)],
                ["total", str(self.total)], ["rate", str(int(self.rate))]]
