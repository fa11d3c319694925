"""The xm commands on vnets: ``vnet-list``, ``vnet-create`` and ``vnet-delete``.

As the original's: ``vnet-list`` prints one vnet id a line, ``-l`` each config; a
failure is xm's one ``Error:`` line and exit status 1.
"""

from __future__ import annotations

from pathlib import Path

import click

from xend_actors import sxp
from xend_actors.client import XendClient


@click.command("vnet-list")
@click.option("-l", "--long", "long_", is_flag=True, help="Print each vnet's whole config.")
@click.pass_obj
def vnet_list(client: XendClient, long_: bool) -> None:
    """List the vnets: their ids, or with -l their configs."""
    if long_:
        click.echo("".join(sxp.pretty(config) for config in client.xend_vnets(detail=True)),
                   nl=False)
    else:
        for vnet_id in client.xend_vnets():
            click.echo(vnet_id)


@click.command("vnet-create")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def vnet_create(client: XendClient, config: Path) -> None:
    """Create a vnet from an SXP file (vnet (id N) ...)."""
    created = client.xend_vnet_create(config)
    click.echo(f"Created vnet {sxp.child_value(created, 'id')}: bridge "
               f"{sxp.child_value(created, 'bridge')}, vnetif {sxp.child_value(created, 'vnetif')}")


@click.command("vnet-delete")
@click.argument("vnet_id", metavar="ID")
@click.pass_obj
def vnet_delete(client: XendClient, vnet_id: str) -> None:
    """Delete vnet ID: its VXLAN device, and its bridge if xend made it."""
    client.xend_vnet_delete(vnet_id)


COMMANDS = (vnet_list, vnet_create, vnet_delete)
