"""The xm commands on API tokens (ours): ``token-create``, ``token-list``, ``token-delete``.

A token lets a program (xm with ``XEND_TOKEN`` or ``--token``, XendClient, curl with
``Authorization: Bearer``) reach xend over TCP. ``token-create`` prints the secret once,
as the last line of its output: xend keeps only its hash.
"""

from __future__ import annotations

import time

import click

from xend_actors import sxp
from xend_actors.client import XendClient

LIST_HEADER = f"{'Name':<24} {'Role':<7} Created"


@click.command("token-create")
@click.argument("name")
@click.option("--viewer", is_flag=True, help="A viewer's token: it may look, not change.")
@click.pass_obj
def token_create(client: XendClient, name: str, viewer: bool) -> None:
    """Make an API token NAME (an admin's unless --viewer); prints it once."""
    made = client.xend_token_create(name, "viewer" if viewer else "admin")
    click.echo(f"Created the {sxp.child_value(made, 'role')} token {name}; it is shown "
               "only now (give it as XEND_TOKEN or Authorization: Bearer):", err=False)
    click.echo(str(sxp.child_value(made, "secret")))


@click.command("token-list")
@click.pass_obj
def token_list(client: XendClient) -> None:
    """List the API tokens: name, role, when made."""
    click.echo(LIST_HEADER)
    for info in client.xend_tokens():
        created = time.strftime("%Y-%m-%d %H:%M:%S",
                                time.localtime(float(sxp.child_value(info, "created", 0))))
        click.echo(f"{sxp.child_value(info, 'name'):<24} "
                   f"{sxp.child_value(info, 'role'):<7} {created}")


@click.command("token-delete")
@click.argument("name")
@click.pass_obj
def token_delete(client: XendClient, name: str) -> None:
    """Delete the API token NAME; it stops working at once."""
    client.xend_token_delete(name)


COMMANDS = (token_create, token_delete, token_list)
