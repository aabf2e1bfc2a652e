"""``runner completion bash|zsh|fish``: the shell script that completes runner's commands.

Click generates it; the shell then calls ``runner`` with ``_RUNNER_COMPLETE`` set to ask for
completions, and ``--job`` answers with the job names ``--job NAME`` would find
(:func:`cluster_runner.commands.options.job_names`) besides files.
"""

from __future__ import annotations

import click

#: The shells click can complete for.
SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> int:
    """Print the completion script for SHELL: commands, options, and job names after --job.

    \b
    Examples:
      eval "$(runner completion bash)"     # in ~/.bashrc
      eval "$(runner completion zsh)"      # in ~/.zshrc
      runner completion fish > ~/.config/fish/completions/runner.fish
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    complete = get_completion_class(shell)
    assert complete is not None  # click ships all three
    script = complete(root.command, {}, root.info_name or "runner", "_RUNNER_COMPLETE").source()
    click.echo(script)
    return 0
