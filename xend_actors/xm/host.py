"""The xm commands about the host (node): ``info``, ``dmesg`` and ``log``."""

from __future__ import annotations

import click

from xend_actors import sxp
from xend_actors.client import XendClient


def info_text(node: sxp.Value) -> str:
    """The node info, a ``%-23s: value`` line per field (facts §14.2)."""
    return "".join(f"{sxp.name(field):<23s}: {sxp.child0(field, '')}\n"
                   for field in sxp.children(node))


def echo_text(text: str) -> None:
    click.echo(text, nl=not text.endswith("\n"))


@click.command()
@click.pass_obj
def info(client: XendClient) -> None:
    """Print information about the host: its system, CPUs and memory."""
    click.echo(info_text(client.xend_node()), nl=False)


@click.command()
@click.option("-c", "--clear", is_flag=True, help="Clear the buffer instead of printing it.")
@click.pass_obj
def dmesg(client: XendClient, clear: bool) -> None:
    """Print (or clear) the hypervisor's message buffer."""
    if clear:
        client.xend_node_clear_dmesg()
    else:
        echo_text(client.xend_node_get_dmesg())


@click.command()
@click.pass_obj
def log(client: XendClient) -> None:
    """Print the xend log."""
    echo_text(client.xend_node_log())


COMMANDS = (info, dmesg, log)
