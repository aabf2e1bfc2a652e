"""``runner cluster up|down|status``: a real multi-node Dask or Ray cluster on 127.0.0.1.

The cluster is described by a config (``cluster_configs/local-dask.yaml``, see
:mod:`cluster_runner.clusters.config`) and keeps its state (address, pids, logs, Ray's token)
in a folder of its own, where ``runner submit --cluster`` finds it. Remote clusters are
started with the engines' own launchers instead (``ray up``, ``dask ssh``, dask-jobqueue):
see ``cluster_configs/`` and the README.
"""

from __future__ import annotations

import click

from cluster_runner.cli import FullHelpGroup

_CONFIG_HELP = "A runner cluster config: a YAML file, or a name in cluster_configs/."
_STATE_HELP = (
    "Folder under which clusters keep their state, one subfolder per config name"
    " [default: $RUNNER_STATE_DIR, or TMPDIR/cluster-runner-UID]."
)


def _options(func):
    from cluster_runner.commands.types import SafePath

    func = click.option(
        "--state-dir",
        type=SafePath(file_okay=False),
        default=None,
        help=_STATE_HELP,
    )(func)
    return click.option(
        "--config", "config", required=True, metavar="FILE|NAME", help=_CONFIG_HELP
    )(func)


def _load(config: str, state_dir: str | None):
    from cluster_runner.clusters.config import find_file, load_cluster_config, state_folder

    path = find_file(config, ".yaml", "cluster config")
    spec = load_cluster_config(path)
    return path, spec, state_folder(spec, state_dir)


@click.group(cls=FullHelpGroup)  # whole summaries in --help, not cut with "..."
def cluster() -> None:
    """Bring a multi-node Dask or Ray cluster on 127.0.0.1 up, down, or ask how it is.

    Dask runs `dask scheduler` and `dask worker` processes; Ray runs real Ray nodes (GCS,
    raylets) through Ray's own multi-node machinery. Every process listens on 127.0.0.1 only
    and is stopped by the pid recorded when it started. For clusters on other machines use
    the engines' launchers (ray up, dask ssh, dask-jobqueue) and a profile: see
    cluster_configs/.

    \b
    Example:
      runner cluster up --config cluster_configs/local-dask.yaml
      runner submit --cluster local-dask --job jobs/full.toml
      runner cluster down --config cluster_configs/local-dask.yaml
    """


@cluster.command()
@_options
@click.option(
    "--oversubscribe",
    is_flag=True,
    help="Start more nodes than this machine holds (more worker slots than 4 per CPU, or"
    " more nodes than its free memory).",
)
def up(config: str, state_dir: str | None, oversubscribe: bool) -> int:
    """Start the cluster a config describes; print its address and what to run next.

    Refused, in one line, while the cluster runs or another 'runner cluster' command is
    using its state folder; the state is recorded before the first process starts, so that
    'down' ends a cluster whose 'up' was interrupted.

    \b
    Examples:
      runner cluster up --config cluster_configs/local-dask.yaml
      runner cluster up --config local-ray
    """
    from cluster_runner import clusters

    path, spec, folder = _load(config, state_dir)
    clusters.require_engine(spec.engine)  # before anything is made or started
    clusters.check_size(spec, oversubscribe)
    click.echo(
        f"starting {spec.engine} cluster {spec.name!r} on 127.0.0.1: {spec.nodes} node(s) x"
        f" {spec.per_node} {'thread' if spec.engine == 'dask' else 'CPU'}(s) ..."
    )
    state = clusters.up(spec, folder, stop_hint=f"runner cluster down --config {path}")
    alive = len(state["processes"])
    click.echo(f"{spec.engine} cluster {spec.name!r} is up at {state['address']}")
    click.echo(f"  {spec.nodes} node(s), {alive} process(es); state and logs in {folder}")
    if state.get("dashboard"):
        click.echo(f"  dashboard: {state['dashboard']}")
    profile = _profile_for(path)
    click.echo("next:")
    hints = getattr(clusters.engine_module(spec.engine), "next_commands", None)
    if hints is not None:  # an engine with its own way in (a local Slurm: SLURM_CONF)
        for line in hints(state, path):
            click.echo(f"  {line}")
    elif profile is not None:
        click.echo(f"  runner submit --cluster {profile} --job full")
        click.echo(f"  runner scale --cluster {profile} --nodes 1,{spec.nodes} --job primes")
    else:
        env = clusters.engine_module(spec.engine).driver_env(state)
        if "RAY_AUTH_TOKEN_PATH" in env:
            click.echo(f"  export RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']}")
        click.echo(
            f"  runner submit --backend {spec.engine} --address {state['address']} --job full"
        )
    click.echo(f"  runner cluster status --config {path}")
    click.echo(f"  runner cluster down --config {path}")
    return 0


@cluster.command()
@_options
def status(config: str, state_dir: str | None) -> int:
    """Show the cluster's processes (alive or gone) and the nodes connected to it.

    Exit status: 0 if every process is alive and every node connected, 1 if not, 3 if the
    cluster is not up.

    \b
    Example:
      runner cluster status --config cluster_configs/local-dask.yaml
    """
    from cluster_runner import clusters

    path, spec, folder = _load(config, state_dir)
    module = clusters.engine_module(spec.engine)
    state = module.status(folder)
    if state is None:
        click.echo(f"{spec.engine} cluster {spec.name!r} is not up (no state in {folder})")
        click.echo(f"start it: runner cluster up --config {path}")
        return 3
    where = f"at {state['address']}" if state.get("up", True) else "is not up (its start stopped)"
    click.echo(f"{spec.engine} cluster {spec.name!r} {where} (state: {folder})")
    for item in state["processes"]:
        mark = "alive" if item["alive"] else "gone"
        click.echo(f"  {item['role']:<24} pid {item['pid']:<8} {mark}")
    nodes: list[str] = []
    if module.healthy(state):
        try:
            nodes = module.connected_nodes(state, timeout=10.0)
        except Exception as exc:  # the engine's own error, in one line
            click.echo(f"nodes connected: cannot ask the cluster ({type(exc).__name__}: {exc})")
    if not state.get("up", True):
        click.echo(f"end what it started: runner cluster down --config {path}")
    click.echo(f"nodes connected: {len(nodes)} of {state['nodes']}")
    for node in nodes:
        click.echo(f"  {node}")
    return 0 if module.healthy(state) and len(nodes) == state["nodes"] else 1


@cluster.command()
@_options
@click.option(
    "--grace",
    type=click.FloatRange(min=0.0),
    default=30.0,
    show_default=True,
    help="Seconds the processes have to stop before they are killed.",
)
def down(config: str, state_dir: str | None, grace: float) -> int:
    """Stop exactly the processes the cluster recorded (and their children); check they are gone.

    Never 'ray stop' nor a search by name: only the pids written when the cluster started.

    \b
    Example:
      runner cluster down --config cluster_configs/local-dask.yaml
    """
    from cluster_runner import clusters
    from cluster_runner.errors import ClusterStartError

    _path, spec, folder = _load(config, state_dir)
    ended, killed, left = clusters.down(spec, folder, grace=grace)
    if not ended and not killed and not left:
        click.echo(f"{spec.engine} cluster {spec.name!r}: nothing running (state: {folder})")
        return 0
    if left:
        raise ClusterStartError(
            f"{len(left)} process(es) of {spec.name!r} are still running after the stop:"
            f" {'; '.join(left)}"
        )
    more = f", {len(killed)} of them killed after {grace:g} s" if killed else ""
    click.echo(
        f"{spec.engine} cluster {spec.name!r} stopped: {ended} process(es) ended{more}, none left"
    )
    return 0


def _profile_for(config):
    """The profile beside ``config`` named like it that points at it (``local-dask.toml``)."""
    from cluster_runner.clusters.profile import load_profile
    from cluster_runner.errors import ClusterConfigError

    candidate = config.with_suffix(".toml")
    if not candidate.is_file():
        return None
    try:
        profile = load_profile(candidate)
    except ClusterConfigError:
        return None
    if profile.cluster is None or profile.cluster.resolve() != config.resolve():
        return None
    return candidate.with_suffix("")
