"""The ``xend`` command: start, stop, restart and status of the daemon (facts §13).

``start`` returns only once the daemon serves, or prints why it could not: the
daemon reports through a pipe, so a port in use or a broken config is one line on
the terminal, not a silent exit found later in a log.
"""

from __future__ import annotations

import io
import os
import select
import signal
import sys
import time
from pathlib import Path

import click
import daemon

from xend_actors.access.pool_token import make_pool_token
from xend_actors.access.tls import listener_certificate
from xend_actors.config import XendConfig, load_config
from xend_actors.daemon import run
from xend_actors.errors import XendError
from xend_actors.logs import redirect_std_streams
from xend_actors.pidfile import PidFile

START_TIMEOUT = 90.0
STOP_TIMEOUT = 90.0
EXIT_NOT_RUNNING = 3  # LSB init-script convention for status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="xend-config.sxp to use (default: $XEND_CONFIG or /etc/xen/xend-config.sxp)")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """Xen's node daemon: manages the domains of this host."""
    try:
        ctx.obj = load_config(config_file.absolute() if config_file else None)
    except XendError as error:
        raise click.ClickException(error.message) from None


@main.command()
@click.option("--foreground", is_flag=True, help="Do not fork; also log to stderr.")
@click.pass_obj
def start(config: XendConfig, foreground: bool) -> None:
    """Start xend; succeed at once if it already runs."""
    pid = PidFile(config.pid_file).running_pid()
    if pid is not None:
        raise click.ClickException(f"xend is already running (pid {pid})")
    if foreground:
        sys.exit(run(config, foreground=True))
    _start_daemon(config)


@main.command()
@click.pass_obj
def stop(config: XendConfig) -> None:
    """Stop xend and wait until every actor has stopped; domains keep running."""
    _stop(config)


@main.command()
@click.pass_obj
def restart(config: XendConfig) -> None:
    """Stop xend if it runs, then start it."""
    _stop(config)
    _start_daemon(config)


@main.command()
@click.pass_obj
def status(config: XendConfig) -> None:
    """Exit 0 when xend runs, 3 when it does not; with TLS, the certificate's fingerprint
    (what clients pin with XEND_FINGERPRINT)."""
    pid = PidFile(config.pid_file).running_pid()
    if pid is None:
        click.echo("xend is not running")
        sys.exit(EXIT_NOT_RUNNING)
    click.echo(f"xend is running (pid {pid})")
    try:
        certificate = listener_certificate(config)
        if certificate is not None:
            click.echo(f"TLS certificate: {certificate.cert}")
            click.echo(f"SHA-256 fingerprint: {certificate.fingerprint()}")
    except XendError as error:
        click.echo(f"TLS certificate: unknown ({error.message})")


@main.command("pool-token")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def pool_token(file: Path) -> None:
    """Make a pool's shared token in FILE (mode 0600; it must not exist): copy the file
    to every member and name it in (xend-pool-token-file FILE)."""
    try:
        make_pool_token(file)
    except XendError as error:
        raise click.ClickException(error.message) from None
    except OSError as error:
        raise click.ClickException(f"{file}: {error.strerror or error}") from None
    click.echo(f"Pool token written to {file}")


def _start_daemon(config: XendConfig) -> None:
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        code = 1
        try:
            code = _daemonize_and_run(config, writer)
        finally:
            os._exit(code)
    os.close(writer)
    os.waitpid(child, 0)  # the first fork exits as soon as the daemon is detached
    report = _read_report(reader, START_TIMEOUT)
    if report.startswith("ready "):
        click.echo(f"xend started (pid {report.split()[1]})")
        return
    raise click.ClickException(report or "xend exited before it was ready; see its log")


def _daemonize_and_run(config: XendConfig, writer: int) -> int:
    context = daemon.DaemonContext(
        working_directory="/", umask=0o022, files_preserve=[writer], signal_map={},
    )
    with context:
        redirect_std_streams(config.debug_log)

        def ready(error: str | None) -> None:
            os.write(writer, (f"error {error}" if error else f"ready {os.getpid()}").encode())
            os.close(writer)

        return run(config, foreground=False, ready=ready)


def _read_report(reader: int, timeout: float) -> str:
    """What the daemon wrote before closing the pipe: ``ready PID`` or ``error TEXT``."""
    deadline = time.monotonic() + timeout
    chunks = []
    with os.fdopen(reader, "rb") as pipe:
        while chunk := _read_before(pipe, deadline):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").removeprefix("error ")


def _read_before(pipe: io.BufferedReader, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([pipe], [], [], left)[0]:
        raise click.ClickException("xend did not report ready in time; see its log")
    return pipe.read1(4096)


def _stop(config: XendConfig) -> None:
    pidfile = PidFile(config.pid_file)
    pid = pidfile.running_pid()
    if pid is None:
        click.echo("xend is not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pidfile.running_pid() is not None:
        if time.monotonic() > deadline:
            raise click.ClickException(f"xend (pid {pid}) did not stop within {STOP_TIMEOUT:g} s")
        time.sleep(0.05)
    click.echo("xend stopped")


if __name__ == "__main__":
    main()
