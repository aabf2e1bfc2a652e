"""The one validation mechanism: pydantic models, checked by ``validate``, one line per fault.

Pinned here once for every kind of input (job specs, workload parameters, cluster configs,
runner profiles): TOML's ``1e9`` is an integer, a bool or a string is not a number, an unknown
key is refused (and reported before anything else), bounds are worded in full, the error is one
line of the caller's class, and through the CLI it is exit 2 with no traceback.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel, Field

from cluster_runner.cli import main
from cluster_runner.errors import ClusterConfigError, JobSpecError, UsageError
from cluster_runner.validation import STRICT_CONFIG, Boolean, Integer, Number, validate
from cluster_runner.workloads import get_workload


class Table(BaseModel):
    model_config = STRICT_CONFIG
    port: Integer = Field(0, ge=0, le=65535)
    timeout: Number = Field(30.0, ge=0.5)
    nodes: Integer | None = None
    flag: Boolean = False


class Outer(BaseModel):
    model_config = STRICT_CONFIG
    inner: Table = Table()


def check(data: dict, error: type[UsageError] = UsageError) -> str:
    with pytest.raises(error) as caught:
        validate(Table, data, where="f.toml", error=error)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("f.toml: ")
    return message.removeprefix("f.toml: ")


def test_integral_float_is_an_integer():
    table = validate(Table, {"port": 8.0e3, "nodes": 1e9}, where="f.toml")
    assert table.port == 8000 and isinstance(table.port, int)
    assert table.nodes == 1_000_000_000 and isinstance(table.nodes, int)


@pytest.mark.parametrize("value", [True, False, "5", 1.5, [1], float("nan")])
def test_bool_string_and_fraction_are_not_integers(value):
    assert check({"port": value}) == f"'port' must be an integer from 0 to 65535, not {value!r}"


@pytest.mark.parametrize("value", [True, "5"])
def test_bool_and_string_are_not_numbers(value):
    assert check({"timeout": value}) == f"'timeout' must be a number >= 0.5, not {value!r}"


def test_an_int_is_a_number_and_only_true_or_false_a_flag():
    assert validate(Table, {"timeout": 2}, where="").timeout == 2.0
    assert check({"flag": 1}) == "'flag' must be true or false, not 1"


def test_bounds_are_worded_in_full():
    assert check({"port": 70000}) == "'port' must be an integer from 0 to 65535, not 70000"
    assert check({"timeout": 0.1}) == "'timeout' must be a number >= 0.5, not 0.1"


def test_unknown_key_is_refused_first_and_names_the_known_ones():
    message = check({"port": -1, "prot": 1})
    assert message == "unknown key 'prot' (known: flag, nodes, port, timeout)"
    with pytest.raises(UsageError, match=r"unknown key 'inner.x' \(known: inner.flag,"):
        validate(Outer, {"inner": {"x": 1}}, where="f")
    with pytest.raises(UsageError, match="'inner' must be a table, not 3"):
        validate(Outer, {"inner": 3}, where="f")


def test_error_class_and_describe_hook():
    assert check({"port": "x"}, ClusterConfigError).startswith("'port'")
    with pytest.raises(JobSpecError, match=r"^f: my words$"):
        validate(Table, {"port": -1}, where="f", error=JobSpecError, describe=lambda d: "my words")


def test_workload_parameters_compile_to_one_model():
    primes = get_workload("primes")
    assert primes.validate({"n": 1e9}, "x") == {"n": 1_000_000_000, "chunks": 16}
    with pytest.raises(JobSpecError, match=r"^x: n must be an integer, got True$"):
        primes.validate({"n": True}, "x")
    with pytest.raises(JobSpecError, match=r"^x: chunks must be >= 1, got 0$"):
        primes.validate({"n": 10, "chunks": 0.0}, "x")
    with pytest.raises(JobSpecError, match=r"^x: n must be <= 1e\+12, got 10000000000000$"):
        primes.validate({"n": 1e13}, "x")


# --- through the CLI: one line, exit 2 -----------------------------------------------------


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    assert lines[0].startswith("runner: error: ")
    return lines[0]


def test_job_spec_error_exits_2(tmp_path, capsys):
    job = tmp_path / "job.toml"
    job.write_text('[[stage]]\nworkload = "dot"\nn = 1e3\nseed = false\n')
    assert main(["submit", "--job", str(job), "--out", str(tmp_path)]) == 2
    assert f"{job}: stage 'dot': seed must be an integer, got False" in one_line(capsys)


def test_cluster_config_error_exits_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("engine: dask\nnodes: true\n")
    assert main(["cluster", "up", "--config", str(config), "--state-dir", str(tmp_path)]) == 2
    assert f"{config}: 'nodes' must be an integer >= 1, not True" in one_line(capsys)


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        ("workers = true", "'defaults.workers' must be an integer, not True"),
        ("connect_timeout = '5'", "'defaults.connect_timeout' must be a number, not '5'"),
        ("workers = 0", "'defaults.workers': 0 is not in the range x>=1"),  # click's range
        ("timeout = 0.0", "'defaults.timeout': 0.0 is not in the range x>=0.001"),
    ],
)
def test_profile_error_exits_2(defaults, expected, tmp_path, capsys):
    profile = tmp_path / "p.toml"
    profile.write_text(f'backend = "threads"\n[defaults]\n{defaults}\n')
    assert main(["submit", "--cluster", str(profile), "--out", str(tmp_path)]) == 2
    line = one_line(capsys)
    assert f"{profile}: {expected}" in line


def test_profile_fills_click_default_map_below_flags(tmp_path, monkeypatch):
    """The profile's values are click's defaults: a flag or RUNNER_* variable still wins."""
    import click

    from cluster_runner.commands.submit import submit

    profile = tmp_path / "p.toml"
    profile.write_text('backend = "threads"\n[defaults]\nworkers = 3\nrepeat = 4\n')
    monkeypatch.setenv("RUNNER_SUBMIT_REPEAT", "2")
    ctx = submit.make_context(
        "submit", ["--cluster", str(profile), "--workers", "1"], auto_envvar_prefix="RUNNER_SUBMIT"
    )
    assert ctx.default_map == {"backend": "threads", "workers": 3, "repeat": 4}
    assert ctx.params["backend"] == "threads"
    assert ctx.params["workers"] == 1  # the flag
    assert ctx.params["repeat"] == 2  # the environment
    assert ctx.get_parameter_source("backend") is click.core.ParameterSource.DEFAULT_MAP


def test_help_imports_no_pydantic():
    code = (
        "import sys; from cluster_runner.cli import main; main(['--help']);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("[]"), out.stdout[-200:]
