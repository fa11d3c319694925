"""The xm commands that set CPU scheduler parameters: bvt, fbvt, atropos, round robin."""

from __future__ import annotations

import click

from xend_actors.client import XendClient
from xend_actors.xm.complete import dom_argument


@click.command()
@dom_argument()
@click.argument("mcuadv", type=int)
@click.argument("warpback", type=int)
@click.argument("warpvalue", type=int)
@click.argument("warpl", type=int)
@click.argument("warpu", type=int)
@click.pass_obj
def bvt(client: XendClient, dom: str, mcuadv: int, warpback: int, warpvalue: int, warpl: int,
        warpu: int) -> None:
    """Set the Borrowed Virtual Time parameters of domain DOM."""
    client.xend_domain_cpu_bvt_set(dom, mcuadv, warpback, warpvalue, warpl, warpu)


@click.command("bvt_ctxallow")
@click.argument("ctx_allow", type=int)
@click.pass_obj
def bvt_ctxallow(client: XendClient, ctx_allow: int) -> None:
    """Set the BVT scheduler's context switch allowance."""
    client.xend_node_cpu_bvt_slice_set(ctx_allow)


@click.command()
@dom_argument()
@click.argument("mcuadv", type=int)
@click.argument("warp", type=int)
@click.argument("warpl", type=int)
@click.argument("warpu", type=int)
@click.pass_obj
def fbvt(client: XendClient, dom: str, mcuadv: int, warp: int, warpl: int, warpu: int) -> None:
    """Set the Fair Borrowed Virtual Time parameters of domain DOM."""
    client.xend_domain_cpu_fbvt_set(dom, mcuadv, warp, warpl, warpu)


@click.command()
@dom_argument()
@click.argument("period", type=int)
@click.argument("slice_", metavar="SLICE", type=int)
@click.argument("latency", type=int)
@click.argument("xtratime", type=int)
@click.pass_obj
def atropos(client: XendClient, dom: str, period: int, slice_: int, latency: int,
            xtratime: int) -> None:
    """Set the Atropos parameters of domain DOM."""
    client.xend_domain_cpu_atropos_set(dom, period, slice_, latency, xtratime)


@click.command()
@click.argument("slice_", metavar="SLICE", type=int)
@click.pass_obj
def rrobin(client: XendClient, slice_: int) -> None:
    """Set the round robin scheduler's time slice."""
    client.xend_node_cpu_rrobin_slice_set(slice_)


COMMANDS = (bvt, bvt_ctxallow, fbvt, atropos, rrobin)
