"""``xm save`` and ``xm restore``: a domain to a file on xend's host and back (facts §14.2).

The file name is made absolute here, as the original did, since xend resolves it on
its own host. ``xm migrate`` is not here yet.
"""

from __future__ import annotations

import os

import click

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.xm.domain import DOMAIN0


@click.command()
@click.argument("dom")
@click.argument("file")
@click.pass_obj
def save(client: XendClient, dom: str, file: str) -> None:
    """Save domain DOM to FILE on xend's host; the domain is then destroyed."""
    if dom in (DOMAIN0, "0"):
        raise click.ClickException("Cannot save Domain-0")
    client.xend_domain_save(dom, os.path.abspath(file))


@click.command()
@click.argument("file")
@click.pass_obj
def restore(client: XendClient, file: str) -> None:
    """Restore a domain from FILE on xend's host and let it run on."""
    info = client.xend_domain_restore(os.path.abspath(file))
    click.echo(sxp.pretty(info), nl=False)
    # xend unpauses the restored domain; the original xm did too.


COMMANDS = (save, restore)
