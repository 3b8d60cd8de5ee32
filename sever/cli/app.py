"""The `sever` group and what every command shares: -v/--verbose and --debug, logging set
up once the arguments are parsed, the report printer, and `main`, which turns errors into
one line and an exit status.

User errors (`SeverError`, and click's usage errors) print as one line on stderr with a
non-zero exit status; a traceback appears only with `--debug`. Anything else is a bug and
says so, in one line too.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import sys

import click

from sever import __version__
from sever.errors import Interrupted, SeverError, UsageError
from sever.logsetup import setup_logging

log = logging.getLogger("sever")
NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


@dataclasses.dataclass
class Flags:
    """-v/--verbose and --debug, given before the subcommand or after it: the context's
    object, which `main` reads back to decide on tracebacks."""

    verbose: bool = False
    debug: bool = False


def flag_options() -> list[click.Option]:
    """-v/--verbose and --debug, for the group and for every command (fresh objects each:
    click keeps per-command state on its parameters)."""

    def setter(name: str):
        def store(ctx: click.Context, param: click.Parameter, value: bool) -> None:
            if value:
                setattr(ctx.ensure_object(Flags), name, True)

        return store

    return [
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=setter("verbose"),
            help="Log debug messages too.",
        ),
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            callback=setter("debug"),
            help="Show tracebacks for errors.",
        ),
    ]


class SeverCommand(click.Command):
    """A command that also takes -v/--verbose and --debug, and sets up logging once its
    own arguments are parsed: both positions of the flags are known by then."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params += flag_options()

    def invoke(self, ctx: click.Context):
        from sever.progress import interval_from_env

        setup_logging(ctx.ensure_object(Flags).verbose)
        interval_from_env()  # a bad SEVER_PROGRESS_INTERVAL fails here, before any work
        try:
            return super().invoke(ctx)
        except UsageError as exc:  # the library's: printed as click's own, with --help
            raise click.UsageError(str(exc), ctx) from exc


class SeverGroup(click.Group):
    command_class = SeverCommand


@click.group(
    cls=SeverGroup, params=flag_options(), context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="sever")
def cli() -> None:
    """Train, evaluate, ensemble and ship Severstal steel-defect segmentation models.

    -v/--verbose and --debug go before the command or after it."""


def echo_report(report, as_json: bool) -> None:
    """A report: its lines, or with --json one JSON object."""
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)


def one_line(exc: Exception) -> str:
    """The message alone, also for errors re-raised from DataLoader workers, whose message
    carries the worker's traceback with the original message on its last line."""
    text = str(exc).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith("sever.errors.") else last


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags = Flags()
    try:
        check_working_directory()
        cli.main(args=args, prog_name="sever", standalone_mode=False, obj=flags)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except NO_ARGS_HELP as exc:  # bare `sever`: the help is the answer
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if flags.debug:
            raise
        click.echo(f"error: {usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if flags.debug:
            raise
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Interrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except SeverError as exc:
        if flags.debug:
            raise
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug, or the machine's disk: still one line unless --debug
        if flags.debug:
            raise
        click.echo(f"error: {unexpected(exc)}", err=True)
        sys.exit(1)


# The machine's, not sever's: a write that no writer of sever expected still fails so.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def unexpected(exc: Exception) -> str:
    """An error no command turned into a line: a full disk or a read-only file system
    named with its file (nothing sever wrote is half-left: writers rename complete files);
    anything else is a bug, and says so."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        from sever.fileio import os_reason  # only now: fileio imports cv2

        where = f"{exc.filename}: " if exc.filename else ""
        then = (
            "write elsewhere" if exc.errno == errno.EROFS else "free some space, or write elsewhere"
        )
        return f"{where}{os_reason(exc)}; {then}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"{type(exc).__name__}: {first} (this is a bug in sever; rerun with --debug and "
        "report it with the traceback)"
    )


def usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line, pointing at the command's --help."""
    command = exc.ctx.command_path if exc.ctx else "sever"
    return f"{exc.format_message()} (see '{command} --help')"


def check_working_directory() -> None:
    """Relative paths need the directory sever runs in: refuse one that was deleted."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise SeverError(
            "the current directory no longer exists (deleted or moved); cd to an existing "
            "folder and run again"
        ) from None
