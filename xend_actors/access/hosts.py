"""Which hosts may reach xend: ``xend-hosts-allow`` and ``xend-relocation-hosts-allow``
patterns, and whether a peer is on this host.

Every door that takes TCP clients (HTTP, relocation, notify URLs, the debug port's
``(exit)``) asks here, so the rule is written once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence


def client_allowed(address: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    """Whether a TCP client at ``address`` may talk to xend (empty list: everyone).

    Patterns must match the whole address; loopback clients also match as
    ``localhost``. Names are not looked up: a reverse DNS lookup could hang.
    """
    if not patterns:
        return True
    names = [address]
    if address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1"):
        names.append("localhost")
    return any(p.fullmatch(name) for p in patterns for name in names)


def is_local(host: str) -> bool:
    """Whether a client at ``host`` is on this host (127.0.0.0/8 or ::1)."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
