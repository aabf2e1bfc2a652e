"""``runner init [DIR]``: copy the built-in job specs and cluster configs into a project to edit.

After ``runner init``, ``--job NAME`` and ``--cluster NAME`` run from that folder find the copies
first (``./jobs`` and ``./cluster_configs`` come before the built-in ones, see
:mod:`cluster_runner.paths`), so editing a copy changes what the name runs, and a new file adds
a name. Files that already exist are kept unless ``--force``: ``init`` never overwrites edits.
"""

from __future__ import annotations

from pathlib import Path

import click

#: What ``init`` copies, and how its summary names each kind.
_KINDS = (("jobs", "job spec"), ("cluster_configs", "cluster config"))


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that exist (default: keep them).")
def init(directory: Path, force: bool) -> int:
    """Copy the built-in job specs and cluster configs into a folder, to edit.

    They go to DIRECTORY/jobs and DIRECTORY/cluster_configs (DIRECTORY: this folder unless
    given). Run from DIRECTORY, --job NAME and --cluster NAME then find the copies before the
    built-in ones. Files that exist are kept unless --force.

    \b
    Examples:
      runner init
      runner init my-project && cd my-project && runner submit --job primes
    """
    import shutil

    from cluster_runner.console import plural
    from cluster_runner.errors import UsageError
    from cluster_runner.paths import builtin_dir

    plan: list[tuple[Path, Path]] = []
    for kind, _ in _KINDS:
        source = builtin_dir(kind)
        if source is None:
            raise UsageError(
                f"this installation has no built-in {kind} to copy (a broken install?)"
            )
        plan += [(path, directory / kind / path.name) for path in _files(source)]
    for _, target in plan:  # refuse before copying anything
        for parent in (target.parent, *target.parent.parents):
            if parent.exists() and not parent.is_dir():
                raise UsageError(f"cannot copy into {target.parent}: {parent} is a file")
    copied: dict[str, int] = {}
    kept: list[Path] = []
    for source, target in plan:
        if target.exists() and not force:
            kept.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied[target.parent.name] = copied.get(target.parent.name, 0) + 1
    parts = [
        f"{plural(copied[kind], noun)} to {directory / kind}"
        for kind, noun in _KINDS
        if copied.get(kind)
    ]
    click.echo(f"copied {' and '.join(parts)}" if parts else "copied nothing")
    if kept:
        names = ", ".join(str(path) for path in kept)
        click.echo(f"kept {plural(len(kept), 'file')} that exist (--force overwrites): {names}")
    here = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
    click.echo("next: edit the copies, then")
    click.echo(f"  {here}runner jobs")
    click.echo(f"  {here}runner submit --job full")
    return 0


def _files(folder: Path) -> list[Path]:
    """The files a built-in folder holds, not Python's or an editor's leftovers."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".pyc"
    )
