"""The ``runner`` command: a thin façade over the package, importing each command lazily.

``runner --help`` imports neither Ray, Dask, CuPy nor numba: each subcommand lives in its own
module under :mod:`cluster_runner.commands`, imported only when it is run (the lazy-group
pattern from click's documentation). Every option can also come from the environment
(``auto_envvar_prefix``): ``RUNNER_SUBMIT_BACKEND=ray runner submit ...``.

:func:`main` is where errors become exit codes: a :class:`~cluster_runner.errors.RunnerError`
or a click usage error is printed as one line on stderr (``runner: error: ...``) with its exit
code (2 for bad input, 1 for a run that failed), Ctrl-C exits 130 and SIGTERM 143. No
traceback of the runner reaches the user for anything they can fix. A task that raised is a bug
in a workload, though, and its author needs the worker's traceback: ``runner --traceback`` (or
``RUNNER_TRACEBACK=1``) prints it after the one line. The default stays one line, so that
scripts and logs that parse it keep working.
"""

from __future__ import annotations

import importlib
import signal
import sys
from contextvars import ContextVar
from typing import Any

import click

from cluster_runner import __version__
from cluster_runner.errors import RunnerError, traceback_of

#: Subcommand name -> "module:attribute" of its click command.
COMMANDS = {
    "submit": "cluster_runner.commands.submit:submit",
    "scale": "cluster_runner.commands.scale:scale",
    "report": "cluster_runner.commands.report:report",
    "compare": "cluster_runner.commands.compare:compare",
    "baseline": "cluster_runner.commands.check:baseline",
    "check": "cluster_runner.commands.check:check",
    "jobs": "cluster_runner.commands.jobs:jobs",
    "workloads": "cluster_runner.commands.workloads:workloads",
    "backends": "cluster_runner.commands.backends:backends",
    "cluster": "cluster_runner.commands.cluster:cluster",
    "init": "cluster_runner.commands.init:init",
    "completion": "cluster_runner.commands.completion:completion",
}


class FullHelpGroup(click.Group):
    """A group whose ``--help`` lists each command with the whole first sentence of its help.

    Click cuts a summary to the terminal's width with "..." (issue 17: ``runner --help`` did);
    the help formatter wraps a long one instead.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class LazyGroup(FullHelpGroup):
    """A group whose subcommands are imported when used, not when the group is."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attribute = self.lazy[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, cmd_name)


#: Whether ``--traceback`` was given: set while the group's options are parsed, read by
#: :func:`main` once an error has unwound every click context.
_SHOW_TRACEBACK: ContextVar[bool] = ContextVar("runner_show_traceback", default=False)


def _remember_traceback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    _SHOW_TRACEBACK.set(bool(value))
    return value


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cluster-runner")
@click.option(
    "--traceback",
    is_flag=True,
    envvar="RUNNER_TRACEBACK",
    expose_value=False,
    callback=_remember_traceback,
    help="When a task raises, print the worker's traceback after the one-line error"
    " (also RUNNER_TRACEBACK=1).",
)
def cli() -> None:
    """Run a verified workload graph on local, Dask or Ray backends and measure how it scales.

    \b
    Example:
      runner submit --job jobs/full.toml --backend local --workers 2
    """


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.strip().splitlines() if part.strip())


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(143)


def _echo_traceback(exc: RunnerError) -> None:
    """The worker's traceback the error carries (``--traceback``), after its one line."""
    text = traceback_of(exc)
    if text is None:
        click.echo("runner: no worker traceback: the error did not come from a task", err=True)
        return
    click.echo("runner: the task's traceback, as its worker formatted it:", err=True)
    click.echo(text.rstrip("\n"), err=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI and turn every failure into one line and an exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    token = _SHOW_TRACEBACK.set(False)
    try:
        code = cli.main(
            args=argv, prog_name="runner", standalone_mode=False, auto_envvar_prefix="RUNNER"
        )
    except RunnerError as exc:
        click.echo(f"runner: error: {_one_line(str(exc))}", err=True)
        if _SHOW_TRACEBACK.get():
            _echo_traceback(exc)
        code = exc.exit_code
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        click.echo(f"runner: error: {_one_line(exc.format_message())}{hint}", err=True)
        code = exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("runner: interrupted; finished runs are in the results file", err=True)
        code = 130
    except SystemExit as exc:
        if exc.code != 143:
            raise
        click.echo("runner: terminated; finished runs are in the results file", err=True)
        code = 143
    finally:
        _SHOW_TRACEBACK.reset(token)
    if not isinstance(code, int):
        code = 0
    if argv is None:
        sys.exit(code)
    return code
