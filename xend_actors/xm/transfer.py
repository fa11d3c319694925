"""``xm save`` and ``xm restore``: a domain to a file on xend's host and back (facts §14.2).

The file name is made absolute here, as the original did, since xend resolves it on
its own host. ``xm save``, ``xm restore`` and ``xm migrate`` follow xend's
``xend.domain.{save,restore,migrate}.progress`` events on its event stream while the
transfer runs and draw them as a progress bar on stderr (bytes, rate, phase); the new
domain's URL goes to stdout.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import click

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.xm.complete import dom_argument
from xend_actors.xm.domain import DOMAIN0


@click.command()
@dom_argument()
@click.argument("file")
@click.pass_obj
def save(client: XendClient, dom: str, file: str) -> None:
    """Save domain DOM to FILE on xend's host; the domain is then destroyed."""
    if dom in (DOMAIN0, "0"):
        raise click.ClickException("Cannot save Domain-0")
    with _progress_bar(client, dom, "xend.domain.save.progress"):
        client.xend_domain_save(dom, os.path.abspath(file))


@click.command()
@click.argument("file")
@click.pass_obj
def restore(client: XendClient, file: str) -> None:
    """Restore a domain from FILE on xend's host and let it run on."""
    with _progress_bar(client, None, "xend.domain.restore.progress"):
        info = client.xend_domain_restore(os.path.abspath(file))
    click.echo(sxp.pretty(info), nl=False)
    # xend unpauses the restored domain; the original xm did too.


BAR_WIDTH = 30
STREAM_WAIT = 5.0  # seconds to wait for the event stream before migrating without a bar


@click.command()
@click.option("-l", "--live", is_flag=True, help="Keep the domain running while its memory goes.")
@click.option("-r", "--resource", type=click.IntRange(min=0), default=0, metavar="MBIT",
              help="Limit the transfer to MBIT Mbit/s (0: no limit).")
@click.option("--pool", "in_pool", is_flag=True,
              help="To the other pool member with the most free memory that fits (no HOST).")
@dom_argument()
@click.argument("host", required=False)
@click.pass_obj
def migrate(client: XendClient, live: bool, resource: int, in_pool: bool, dom: str,
            host: str | None) -> None:
    """Migrate domain DOM to HOST (host[:port] of its xend's relocation port), or with
    --pool to the pool member with room."""
    if dom in (DOMAIN0, "0"):
        raise click.ClickException("Cannot migrate Domain-0")
    if in_pool == (host is not None):
        raise click.ClickException("Give HOST, or --pool to let the pool choose (not both)")
    with _progress_bar(client, dom, "xend.domain.migrate.progress"):
        if in_pool:
            moved = client.xend_pool_migrate(dom, int(live), resource)
            url = sxp.child_value(moved, "location")
        else:
            url = client.xend_domain_migrate(dom, str(host), int(live), resource)
    if in_pool:
        click.echo(f"Migrated domain {dom} to pool member {sxp.child_value(moved, 'host')}",
                   err=True)
    click.echo(url)


@contextlib.contextmanager
def _progress_bar(client: XendClient, dom: str | None, event_name: str) -> Iterator[None]:
    """Draw ``dom``'s (None: any domain's) progress events called ``event_name`` on stderr
    while the body runs."""
    opened, drawn = threading.Event(), threading.Event()
    threading.Thread(target=_draw_progress, args=(client, dom, event_name, opened, drawn),
                     daemon=True).start()
    opened.wait(STREAM_WAIT)
    try:
        yield
    finally:
        if drawn.is_set():
            click.echo("", err=True)


def _draw_progress(client: XendClient, dom: str | None, event_name: str,
                   opened: threading.Event, drawn: threading.Event) -> None:
    """Draw the progress events of ``dom``'s transfer until the process ends."""
    try:
        for event in client.xend_event_stream(on_open=opened.set):
            value = event.value
            if event.name != event_name or not isinstance(value, list) \
                    or (dom is not None and dom not in value[:2]):
                continue
            click.echo("\r" + progress_line(sxp.child(value, "progress") or []), nl=False,
                       err=True)
            drawn.set()
    except Exception:  # the bar is a nicety: the migration goes on without it
        opened.set()


def progress_line(progress: sxp.Value) -> str:
    """``[#####.....]  40%  12.5/32.0 MiB  5.1 MiB/s  precopy`` for a (progress ...)."""
    sent = int(sxp.child_value(progress, "sent", "0"))
    total = max(int(sxp.child_value(progress, "total", "0")), sent, 1)
    rate = int(sxp.child_value(progress, "rate", "0"))
    done = sent * BAR_WIDTH // total
    mib = 1 << 20
    return (f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {100 * sent // total:3d}%  "
            f"{sent / mib:.1f}/{total / mib:.1f} MiB  {rate / mib:.1f} MiB/s  "
            f"{sxp.child_value(progress, 'phase', '')}")


COMMANDS = (save, restore, migrate)
