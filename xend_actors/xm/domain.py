"""The xm commands on domains (facts §14.2), except ``create``: list, pause, shutdown,
sysrq (Xen 2.0.6's), ...

Also the ``xm list`` table (facts §14.4), kept as plain functions of domain info SXPs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import click

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.xm.complete import dom_argument

DOMAIN0 = "Domain-0"
LIST_HEADER = "Name              Id  Mem(MB)  CPU  State  Time(s)  Console"
WAIT_TIMEOUT = 300.0  # seconds `xm shutdown -w` waits before giving up


def list_row(info: sxp.Value) -> str:
    """One ``xm list`` line for a domain info SXP."""
    kids = first_children(info)

    def field(name: str, default: str) -> str:  # sxp.child_value(info, name, default)
        kid = kids.get(name)
        if kid is None:
            return default
        # A string second is no attribute list: it is the value, found without a copy.
        return str(kid[1] if len(kid) > 1 and isinstance(kid[1], str) else sxp.child0(kid, default))

    console = kids.get("console")
    port = str(sxp.child_value(console, "console_port", "")) if console else ""
    cpu_time = float(field("cpu_time", "0"))
    return (f"{field('name', '??'):<16} {field('id', '-1'):>3}  {field('memory', '0'):>7}  "
            f"{field('cpu', '0'):>3}  {field('state', '??'):>5}  {cpu_time:7.1f}    {port:>4}")


def first_children(element: sxp.Value) -> dict[str, Any]:
    """The first child element of each name, by name: ``sxp.child`` for every name in one
    pass (a row wants eight, and ``xm list`` may have thousands of rows)."""
    found: dict[str, Any] = {}
    for kid in sxp.children(element):
        if isinstance(kid, list | tuple) and kid and isinstance(kid[0], str):
            found.setdefault(kid[0], kid)
    return found


def list_table(infos: Iterable[sxp.Value]) -> str:
    """The ``xm list`` table: the header and a row per domain, in the given order."""
    return "\n".join([LIST_HEADER, *map(list_row, infos)]) + "\n"


def all_domains(client: XendClient) -> list[sxp.Value]:
    """Every domain's info, sorted by name, in one request however many there are."""
    reply = client.xend_domains(detail=True)
    infos = [info for info in reply if isinstance(info, list) and sxp.name(info) == "domain"]
    return sorted(infos, key=lambda info: sxp.child_value(info, "name", ""))


@click.command("list")
@click.option("-l", "--long", "long_", is_flag=True, help="Print each domain's whole info.")
@click.option("--pool", "pool", is_flag=True,
              help="Every domain of xend's pool, with its host.")
@dom_argument("doms", nargs=-1)
@click.pass_obj
def list_(client: XendClient, long_: bool, pool: bool, doms: tuple[str, ...]) -> None:
    """List information about domains: all, or the DOMs given."""
    if pool:
        from xend_actors.xm.pool import domains_table, pool_domains

        domains = pool_domains(client, doms)
        click.echo("".join(map(sxp.pretty, domains)) if long_ else domains_table(domains),
                   nl=False)
        return
    infos = [client.xend_domain(dom) for dom in doms] if doms else all_domains(client)
    if long_:
        click.echo("".join(sxp.pretty(info) for info in infos), nl=False)
    else:
        click.echo(list_table(infos), nl=False)


@click.command()
@click.option("-R", "--reboot", is_flag=True, help="Restart the domain afterwards.")
@dom_argument()
@click.pass_obj
def destroy(client: XendClient, reboot: bool, dom: str) -> None:
    """Terminate domain DOM at once."""
    client.xend_domain_destroy(dom, "reboot" if reboot else "halt")


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Shut down every domain but Domain-0.")
@click.option("-w", "--wait", is_flag=True, help="Wait until the domains are gone (halts them).")
@click.option("-H", "--halt", is_flag=True, help="Shut down without restarting.")
@click.option("-R", "--reboot", is_flag=True, help="Shut down and restart.")
@dom_argument(required=False)
@click.pass_obj
def shutdown(client: XendClient, all_: bool, wait: bool, halt: bool, reboot: bool,
             dom: str | None) -> None:
    """Ask domain DOM (or all with -a) to shut down."""
    reason = shutdown_reason(wait, halt, reboot)
    if all_:
        names = sorted(name for name in client.xend_domains() if name != DOMAIN0)
    elif dom is None:
        raise click.ClickException("Missing domain: give DOM, or -a for every domain but "
                                   "Domain-0")
    else:
        # By name, so that -w can watch the list of names.
        names = [sxp.child_value(client.xend_domain(dom), "name")]
    for name in names:
        client.xend_domain_shutdown(name, reason)
    if wait:
        wait_until_gone(client, names)


def shutdown_reason(wait: bool, halt: bool, reboot: bool) -> str:
    """The reason the switches ask for, with the original's errors for conflicting ones."""
    if wait:
        if reboot:
            raise click.ClickException("Can't specify wait and reboot")
        return "halt"
    if halt and reboot:
        raise click.ClickException("Can't specify halt and reboot")
    return "halt" if halt else "reboot" if reboot else "poweroff"


def wait_until_gone(client: XendClient, names: list[str]) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    waiting = list(names)
    while True:
        alive = set(client.xend_domains())
        for name in [name for name in waiting if name not in alive]:
            click.echo(f"Domain {name} terminated")
            waiting.remove(name)
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise click.ClickException(f"Domains still running after {WAIT_TIMEOUT:g} s: "
                                       + " ".join(waiting))
        time.sleep(1)
    click.echo("All domains terminated")


@click.command()
@dom_argument()
@click.pass_obj
def pause(client: XendClient, dom: str) -> None:
    """Pause execution of domain DOM."""
    client.xend_domain_pause(dom)


@click.command()
@dom_argument()
@click.pass_obj
def unpause(client: XendClient, dom: str) -> None:
    """Let paused domain DOM run again."""
    client.xend_domain_unpause(dom)


@click.command()
@dom_argument()
@click.argument("mb", type=int)
@click.pass_obj
def maxmem(client: XendClient, dom: str, mb: int) -> None:
    """Set the memory limit of domain DOM to MB megabytes."""
    client.xend_domain_maxmem_set(dom, mb)


@click.command()
@dom_argument()
@click.argument("mb", type=int)
@click.pass_obj
def balloon(client: XendClient, dom: str, mb: int) -> None:
    """Ask domain DOM's balloon driver to bring its memory to MB megabytes."""
    client.xend_domain_mem_target_set(dom, mb)


@click.command()
@dom_argument()
@click.argument("cpu", type=int)
@click.pass_obj
def pincpu(client: XendClient, dom: str, cpu: int) -> None:
    """Pin domain DOM to physical CPU."""
    client.xend_domain_pincpu(dom, cpu)


@click.command()
@dom_argument()
@click.argument("key")
@click.pass_obj
def sysrq(client: XendClient, dom: str, key: str) -> None:
    """Send the magic SysRq KEY (one character: b reboots, s syncs...) to domain DOM."""
    client.xend_domain_shutdown(dom, "sysrq", key)


@click.command()
@dom_argument("name")
@click.pass_obj
def domid(client: XendClient, name: str) -> None:
    """Print the id of the domain called NAME."""
    click.echo(sxp.child_value(client.xend_domain(name), "id"))


@click.command()
@click.argument("id")
@click.pass_obj
def domname(client: XendClient, id: str) -> None:
    """Print the name of the domain with id ID."""
    click.echo(sxp.child_value(client.xend_domain(id), "name"))


COMMANDS = (list_, destroy, shutdown, pause, unpause, maxmem, balloon, pincpu, sysrq, domid,
            domname)
