"""MAC addresses xend makes up for vifs that name none (facts §5.5), shared by the
daemon's device configs and ``xm create``."""

from __future__ import annotations

import random


def random_mac() -> str:
    """A MAC in the unassigned ex-DEC OUI ``aa:00:00``, 4th byte below 0x80 (facts §5.5)."""
    octets = (0xAA, 0x00, 0x00, random.randint(0x00, 0x7F),
              random.randint(0x00, 0xFF), random.randint(0x00, 0xFF))
    return ":".join(f"{octet:02x}" for octet in octets)
