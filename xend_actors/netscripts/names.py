"""Linux link names: what the kernel takes as an interface name (at most 15 bytes, no
``/``, ``:`` or white space, not ``.`` or ``..``), for the scripts and xend alike."""

from __future__ import annotations

import re

_IFNAME = re.compile(r"[^/\s:]{1,15}")


def valid_ifname(text: str) -> bool:
    return bool(_IFNAME.fullmatch(text)) and text not in (".", "..")
