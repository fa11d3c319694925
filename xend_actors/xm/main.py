"""The ``xm`` command: how to reach xend, command dispatch, help, errors, and ``xm call``.

Commands live one module per group (``console``, ``domain``, ``device``, ``create``,
``host``, ``top``, ``scheduler``, ``transfer``, ``vnet``, ``token``, ``pool``); this module
puts them together as the original did (facts §14.1): any unique prefix of a command name
runs it, ``xm help`` lists the commands by group, and every error is ``Error: <message>``
on stderr with exit status 1. A command's module is imported only when it runs (``xm help``
imports them all): ``xm list`` loads neither create's config files nor the console's
WebSocket terminal, which were a quarter of every command's imports.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterable, Sequence

import click

from xend_actors import sxp
from xend_actors.client import XendClient
from xend_actors.errors import XendError


class UnknownCommand(click.ClickException):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown command: {name}\nTry 'xm help' for more information.")


def resolve(name: str, names: Iterable[str]) -> str | None:
    """The command ``name`` stands for: itself, else the one name it is a prefix of."""
    names = list(names)
    if name in names:
        return name
    matches = [candidate for candidate in names if candidate.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def load_command(name: str) -> click.Command:
    """The command called ``name`` (one of ``COMMAND_MODULES``), its module imported."""
    return next(found for found in commands_of(COMMAND_MODULES[name]) if found.name == name)


def commands_of(module: str) -> Sequence[click.Command]:
    """The commands module ``module`` of xm defines, in its own order."""
    if module == "main":
        return (help_, call)
    found: Sequence[click.Command] = importlib.import_module(f"xend_actors.xm.{module}").COMMANDS
    return found


NEGATIVE = re.compile(r"-[0-9]+(\.[0-9]*)?")


def numbers_as_values(command: click.Command, args: list[str]) -> list[str]:
    """``args`` with each negative number read as a value, not an option: the options
    first, then ``--``, then the values in their order. click would refuse ``xm maxmem d
    -3`` with "No such option: -3"; xend is the one to say what the value may be."""
    if "--" in args or not any(NEGATIVE.fullmatch(arg) for arg in args):
        return args
    takes_value = {name for param in command.params
                   if isinstance(param, click.Option) and not param.is_flag and not param.count
                   for name in (*param.opts, *param.secondary_opts)}
    options: list[str] = []
    values: list[str] = []
    given = iter(args)
    for arg in given:
        if arg.startswith("-") and len(arg) > 1 and not NEGATIVE.fullmatch(arg):
            options.append(arg)
            value = next(given, None) if arg in takes_value else None
            if value is not None:
                options.append(value)
        else:
            values.append(arg)
    return [*options, "--", *values]


class XmGroup(click.Group):
    """A click group that takes unique prefixes, imports a command's module only when it
    is asked for, and prints the original's help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = resolve(cmd_name, COMMAND_MODULES)
        return load_command(found) if found else None

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        command = self.get_command(ctx, args[0])
        if command is None or command.name is None:
            if ctx.resilient_parsing:  # shell completion: offer nothing, say nothing
                return None, None, args[1:]
            raise UnknownCommand(args[0])
        return command.name, command, numbers_as_values(command, args[1:])

    def get_help(self, ctx: click.Context) -> str:
        return help_text().rstrip("\n")  # click's --help adds the newline


@click.group(cls=XmGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", envvar="XEND", metavar="[https://]HOST:PORT",
              help="Reach xend over TCP at this address, with TLS if it says https:// "
                   "(env XEND); needs a token.")
@click.option("--unix", "unix_path", envvar="XEND_UNIX_PATH", metavar="PATH",
              type=click.Path(dir_okay=False),
              help="Reach xend on this Unix socket (env XEND_UNIX_PATH; the default is "
                   "/var/run/xend/xend.sock).")
@click.option("--token", envvar="XEND_TOKEN", metavar="TOKEN",
              help="The API token to send over TCP (env XEND_TOKEN).")
@click.option("--ca", envvar="XEND_CA", metavar="PATH",
              type=click.Path(dir_okay=False),
              help="Verify xend's TLS certificate against this CA bundle, or xend's "
                   "self-signed certificate itself (env XEND_CA; default: the system's CAs).")
@click.option("--fingerprint", envvar="XEND_FINGERPRINT", metavar="SHA256",
              help="Trust only the TLS certificate with this SHA-256 fingerprint, as "
                   "'xend status' prints it (env XEND_FINGERPRINT).")
@click.pass_context
def xm(ctx: click.Context, server: str | None, unix_path: str | None,
       token: str | None, ca: str | None, fingerprint: str | None) -> None:
    """Control xend and its domains."""
    # The one place that decides which xend xm talks to.
    ctx.obj = ctx.with_resource(XendClient(server, unix_path=unix_path, token=token, ca=ca,
                                           fingerprint=fingerprint))
    if ctx.invoked_subcommand is None:
        click.echo(help_text(), nl=False)


@click.command("help")
@click.argument("command", required=False)
def help_(command: str | None) -> None:
    """Print help on xm, or on one command."""
    if command is None:
        click.echo(help_text(), nl=False)
        return
    found = resolve(command, COMMAND_MODULES)
    if found is None:
        raise UnknownCommand(command)
    chosen = load_command(found)
    with click.Context(chosen, info_name=found, parent=click.get_current_context().parent) as ctx:
        click.echo(chosen.get_help(ctx))


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("function")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def call(client: XendClient, function: str, args: tuple[str, ...]) -> None:
    """Call a XendClient function: FUNCTION ARGS... (the leading xend_ may be left out)."""
    name = function if function.startswith("xend") else "xend_" + function
    method = getattr(client, name, None)
    if not name.startswith("xend") or not inspect.ismethod(method):
        raise click.ClickException(f"Unknown xend function: {function}: give a XendClient "
                                   "method's name (domain_pause, or xend_domain_pause)")
    try:
        inspect.signature(method).bind(*args)
    except TypeError as error:
        raise click.ClickException(f"{name}: {error}") from None
    result = method(*args)
    if isinstance(result, str):
        click.echo(result, nl=not result.endswith("\n"))
    elif result is not None:
        click.echo(sxp.pretty(result), nl=False)


# Groups in the original's order (sorted by group name), each with its title line and
# the modules of its commands.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("main",)),
    ("Commands related to consoles:", ("console",)),
    ("Commands on domains:", ("create", "domain", "device", "transfer")),
    # The original had a group of its own for vnets; they are the host's networks.
    ("Commands related to the xen host (node):", ("host", "top", "vnet", "token", "pool")),
    ("Commands controlling scheduling:", ("scheduler",)),
)

# Each command's module, to find a command without importing every module (the unit
# tests check it against the modules' COMMANDS).
COMMAND_MODULES: dict[str, str] = {
    "help": "main", "call": "main",
    "console": "console", "consoles": "console",
    "create": "create",
    **dict.fromkeys(("list", "destroy", "shutdown", "pause", "unpause", "maxmem", "balloon",
                     "pincpu", "sysrq", "domid", "domname"), "domain"),
    **dict.fromkeys(("vbd-list", "vbd-create", "vbd-destroy", "vif-list", "vif-create",
                     "vif-destroy"), "device"),
    **dict.fromkeys(("save", "restore", "migrate"), "transfer"),
    **dict.fromkeys(("info", "dmesg", "log"), "host"),
    "top": "top",
    "pool-list": "pool",
    **dict.fromkeys(("vnet-list", "vnet-create", "vnet-delete"), "vnet"),
    **dict.fromkeys(("token-create", "token-delete", "token-list"), "token"),
    **dict.fromkeys(("bvt", "bvt_ctxallow", "fbvt", "atropos", "rrobin"), "scheduler"),
}


def help_text() -> str:
    """Every command by group: a title line, then ``%-14s %s`` per command (facts §14.1)."""
    lines = ["Usage: xm [--server [https://]HOST:PORT [--token TOKEN] "
             "[--ca PATH | --fingerprint SHA256] | --unix PATH] CMD [ARGS]..."]
    for title, modules in GROUPS:
        lines += ["", title, ""] if title else [""]
        commands = [command for module in modules for command in commands_of(module)]
        for command in sorted(commands, key=lambda c: c.name or ""):
            lines.append(f"{command.name:<14s} {command.get_short_help_str(limit=200)}")
    lines += ["", "Try 'xm help CMD' for help on CMD"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run xm; the exit status is 0, or 1 after one ``Error:`` line on stderr."""
    try:
        status = xm.main(args=argv, prog_name="xm", standalone_mode=False)
    except click.ClickException as error:
        return _fail(error.format_message())
    except XendError as error:
        # A server message may span lines; xm reports one line.
        return _fail(re.sub(r"\s*\n\s*", " ", error.message.strip()))
    except click.Abort:
        return 1
    return status if isinstance(status, int) else 0


def _fail(message: str) -> int:
    click.echo(f"Error: {message}", err=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
