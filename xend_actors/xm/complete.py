"""Shell completion of domains: ``xm pause <TAB>`` offers the names xend lists.

click completes commands and options by itself (``_XM_COMPLETE``); a DOM argument
declared with ``dom_argument`` asks xend for its domains too, the way the command would
reach it (``--server``, ``--unix``, ``XEND``...). A xend that does not answer within a
second offers nothing: the shell waits on this.
"""

from __future__ import annotations

from typing import Any

import click

from xend_actors.client import XendClient
from xend_actors.errors import XendError

COMPLETION_TIMEOUT = 1.0  # seconds a TAB may wait for xend


def domain_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The domains whose names start with ``incomplete``; none if xend cannot say."""
    given = ctx.find_root().params
    try:
        with XendClient(given.get("server"), unix_path=given.get("unix_path"),
                        token=given.get("token"), ca=given.get("ca"),
                        fingerprint=given.get("fingerprint"),
                        timeout=COMPLETION_TIMEOUT) as client:
            names = client.xend_domains()
    except (XendError, OSError):
        return []
    return [name for name in names if isinstance(name, str) and name.startswith(incomplete)]


def dom_argument(name: str = "dom", **attrs: Any) -> Any:
    """``click.argument(name)`` whose values the shell completes with domain names."""
    return click.argument(name, shell_complete=domain_names, **attrs)
