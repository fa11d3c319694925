"""``xm create``: build a domain's config, create it, unpause it (facts §14.3).

The config is either an SXP file (``-F``, uploaded as is) or a Python config file
turned into ``(vm ...)`` by ``xend_actors.xm.configfile``. A domain that was created
but could not be unpaused is destroyed again: create leaves no half-started domain.
With ``--pool`` the xend asked places the domain on the member of its pool with the
most free memory that fits, and unpauses it there (``POST /xend/pool/``); xm says
which member it went to.
"""

from __future__ import annotations

from pathlib import Path

import click

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError
from xend_actors.xm.configfile import (
    DEFAULT_DEFCONFIG,
    DEFAULT_PATH,
    CreateOptions,
    build_vm_sxpr,
    check_sxp_file,
    describe_script,
    find_config_file,
    help_config,
)


@click.command()
@click.option("-f", "--defconfig", metavar="FILE",
              help=f"Python config file (default {DEFAULT_DEFCONFIG}); a bare FILE argument too.")
@click.option("-F", "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SXP config file, sent to xend as it is.")
@click.option("--path", default=DEFAULT_PATH, show_default=True,
              help="Where to look for the Python config file.")
@click.option("-n", "--dryrun", is_flag=True, help="Print the config; create nothing.")
@click.option("-p", "--paused", is_flag=True, help="Leave the new domain paused.")
@click.option("-c", "--console_autoconnect", is_flag=True,
              help="Connect to the domain's console once it is started.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--pool", "in_pool", is_flag=True,
              help="Create it on the pool member with the most free memory that fits.")
@click.option("--help_config", "help_config_", is_flag=True,
              help="Print the variables a Python config file may set; with FILE, also "
                   "those it declares (xm_vars).")
@click.argument("args", nargs=-1, metavar="[FILE] [VAR=VAL]...")
@click.pass_context
def create(ctx: click.Context, defconfig: str | None, config: Path | None, path: str,
           dryrun: bool, paused: bool, console_autoconnect: bool, quiet: bool,
           in_pool: bool, help_config_: bool, args: tuple[str, ...]) -> None:
    """Create a domain from a config file, with VAR=VAL settings."""
    assignments = tuple(arg for arg in args if "=" in arg)
    files = [name for name in (defconfig, *(a for a in args if "=" not in a)) if name]
    if len(files) > 1:
        raise click.ClickException("More than one config file: " + " ".join(files)
                                   + ": give one, by -f FILE or as a bare word")
    if config is not None and (files or assignments):
        raise click.ClickException("-F takes the whole config: no other config file "
                                   "or VAR=VAL with it")

    def say(line: str) -> None:
        if not quiet:
            click.echo(line)

    defconfig = files[0] if files else DEFAULT_DEFCONFIG
    if help_config_:
        click.echo(help_config(), nl=False)
        if files:
            say(f'Using config file "{find_config_file(defconfig, path)}".')
            describe_script(CreateOptions(defconfig, None, path, assignments))
        return
    if config is None:
        say(f'Using config file "{find_config_file(defconfig, path)}".')
    options = CreateOptions(defconfig, config, path, assignments)
    if dryrun:
        click.echo(sxp.pretty(build_vm_sxpr(options)), nl=False)
        return
    # An SXP file goes up as it is, read here first only so that an error names the file.
    if config is not None:
        check_sxp_file(config)
    vm = config or build_vm_sxpr(options)

    client: XendClient = ctx.obj
    if in_pool:
        if console_autoconnect:
            raise click.ClickException("-c and --pool: the console is on the member the "
                                       "domain goes to; use xm console there")
        info = client.xend_pool_create(vm, unpause=not paused)
    else:
        info = client.xend_domain_create(vm)
    name = sxp.child_value(info, "name")
    if not paused and not in_pool:
        start(client, name)
    port = sxp.child_value(sxp.child(info, "console"), "console_port")
    host = sxp.child_value(info, "host") if in_pool else None
    say(f"Started domain {name}" + (f" on pool member {host}" if host else "")
        + (f", console on port {port}" if port else ""))
    if console_autoconnect:
        root = ctx.find_root().command
        console = root.get_command(ctx, "console") if isinstance(root, click.Group) else None
        if console is None:
            raise click.ClickException("Console autoconnect is not available yet "
                                       f"(no xm console); domain {name} was created")
        ctx.invoke(console, dom=name)


def start(client: XendClient, name: str) -> None:
    """Unpause the new domain, or destroy it and say why it could not start."""
    try:
        client.xend_domain_unpause(name)
    except XendError as error:
        failure = f"Failed to unpause domain {name}: {error.message}"
        try:
            client.xend_domain_destroy(name, "halt")
        except XendError as also:
            failure += f"; destroying it failed too: {also.message}"
        raise click.ClickException(failure) from None


COMMANDS = (create,)
