"""The xm commands on the pool xend is a member of: ``pool-list`` (its hosts with their
state and load, then every domain with its host), and the table ``xm list --pool``
prints, kept as plain functions of the pool's SXP (``GET /xend/pool/``)."""

from __future__ import annotations

from collections.abc import Iterable

import click

from xend_actors import sxp
from xend_actors.client import XendClient

HOSTS_HEADER = "Host              State  Domains  Free(MB)  CPUs  Load  API"
DOMAINS_HEADER = "Name              Id  Mem(MB)  VCPUs  State   HA  Host"


def _fields(element: sxp.Value) -> dict[str, str]:
    """An element's one-atom fields by name (the first of each), '-' for the rest."""
    found: dict[str, str] = {}
    for kid in sxp.children(element):
        if isinstance(kid, list) and len(kid) == 2 and all(isinstance(x, str) for x in kid):
            found.setdefault(kid[0], kid[1])
    return found


def pool_part(pool: sxp.Value, part: str, kind: str) -> list[sxp.Value]:
    """The pool's ``hosts`` or ``domains``: their ``host`` or ``domain`` elements."""
    return [item for item in sxp.children(sxp.child(pool, part, []), kind)
            if isinstance(item, list)]


def host_row(host: sxp.Value) -> str:
    f = _fields(host)
    return (f"{f.get('name', '??'):<16}  {f.get('state', '??'):<5}  "
            f"{f.get('domain_count', '-'):>7}  {f.get('free_mb', '-'):>8}  "
            f"{f.get('cpus', '-'):>4}  {f.get('load', '-'):>4}  {f.get('api', '-')}")


def domain_row(domain: sxp.Value) -> str:
    f = _fields(domain)
    return (f"{f.get('name', '??'):<16} {f.get('id', '-'):>3}  {f.get('memory', '-'):>7}  "
            f"{f.get('vcpus', '-'):>5}  {f.get('state', '-'):>5}  {f.get('ha', '-'):>3}  "
            f"{f.get('host', '??')}")


def domains_table(domains: Iterable[sxp.Value]) -> str:
    """``xm list --pool``: xm list's columns the pool keeps, and each domain's host."""
    return "\n".join([DOMAINS_HEADER, *map(domain_row, domains)]) + "\n"


def pool_table(pool: sxp.Value) -> str:
    """``xm pool-list``: the hosts, a blank line, the domains."""
    hosts = [HOSTS_HEADER, *map(host_row, pool_part(pool, "hosts", "host"))]
    return "\n".join(hosts) + "\n\n" + domains_table(pool_part(pool, "domains", "domain"))


def pool_domains(client: XendClient, names: Iterable[str] = ()) -> list[sxp.Value]:
    """The pool's domains (by name), or those named, each of which must be in the pool."""
    domains = pool_part(client.xend_pool(), "domains", "domain")
    wanted = list(names)
    if not wanted:
        return domains
    by_name = {sxp.child_value(domain, "name"): domain for domain in domains}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise click.ClickException(f"No domain {missing[0]} in the pool")
    return [by_name[name] for name in wanted]


@click.command("pool-list")
@click.option("-l", "--long", "long_", is_flag=True, help="Print the pool's whole SXP.")
@click.pass_obj
def pool_list(client: XendClient, long_: bool) -> None:
    """List the pool's hosts with their state and load, and its domains with their host."""
    pool = client.xend_pool()
    click.echo(sxp.pretty(pool) if long_ else pool_table(pool), nl=False)


COMMANDS = (pool_list,)
