"""The xm commands on a domain's devices (facts §14.2): vbd-list, vbd-create, vbd-destroy,
vif-list; and ours to match, vif-create and vif-destroy.

A list prints one device info SXP per line, as the original did.
"""

from __future__ import annotations

import click

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.xm.complete import dom_argument


def _echo_devices(devices: sxp.Value) -> None:
    for device in devices or []:
        click.echo(sxp.show(device))


@click.command("vbd-list")
@dom_argument()
@click.pass_obj
def vbd_list(client: XendClient, dom: str) -> None:
    """List the virtual block devices of domain DOM."""
    _echo_devices(client.xend_domain_vbds(dom))


@click.command("vbd-create")
@dom_argument()
@click.argument("uname")
@click.argument("dev")
@click.argument("mode", type=click.Choice(["r", "w", "r!", "w!"]))
@click.argument("backend", required=False)
@click.pass_obj
def vbd_create(client: XendClient, dom: str, uname: str, dev: str, mode: str,
               backend: str | None) -> None:
    """Attach UNAME (phy:DEV, file:PATH, TYPE:...) to domain DOM as DEV, mode r or w."""
    config: list = ["vbd", ["uname", uname], ["dev", dev], ["mode", mode]]
    if backend is not None:
        config.append(["backend", backend])
    click.echo(sxp.show(client.xend_domain_device_create(dom, config)))


@click.command("vbd-destroy")
@dom_argument()
@click.argument("idx", type=int)
@click.pass_obj
def vbd_destroy(client: XendClient, dom: str, idx: int) -> None:
    """Detach virtual block device IDX (as vbd-list shows it) from domain DOM."""
    client.xend_domain_device_destroy(dom, "vbd", idx)


@click.command("vif-list")
@dom_argument()
@click.pass_obj
def vif_list(client: XendClient, dom: str) -> None:
    """List the virtual network interfaces of domain DOM."""
    _echo_devices(client.xend_domain_vifs(dom))


@click.command("vif-create")
@click.option("--mac", help="The vif's MAC (default: a random aa:00:00:... one).")
@click.option("--bridge", help="The bridge to attach it to (default: xend's vif-bridge).")
@click.option("--script", help="The vif script (default: xend's vif-script).")
@click.option("--ip", "ips", multiple=True, help="An address it may use (repeatable).")
@dom_argument()
@click.pass_obj
def vif_create(client: XendClient, mac: str | None, bridge: str | None, script: str | None,
               ips: tuple[str, ...], dom: str) -> None:
    """Add a virtual network interface to domain DOM."""
    config: list = ["vif"]
    config += [[key, value] for key, value in
               (("mac", mac), ("bridge", bridge), ("script", script)) if value]
    config += [["ip", ip] for ip in ips]
    click.echo(sxp.show(client.xend_domain_device_create(dom, config)))


@click.command("vif-destroy")
@dom_argument()
@click.argument("idx", type=int)
@click.pass_obj
def vif_destroy(client: XendClient, dom: str, idx: int) -> None:
    """Remove virtual network interface IDX from domain DOM."""
    client.xend_domain_device_destroy(dom, "vif", idx)


COMMANDS = (vbd_list, vbd_create, vbd_destroy, vif_list, vif_create, vif_destroy)
