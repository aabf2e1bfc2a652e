"""``runner compare A B``: verdicts and exit codes on crafted results, what differs, bad input."""

from __future__ import annotations

import json
import re

import pytest
from test_report import record

from cluster_runner.cli import main
from cluster_runner.results import ResultsWriter

#: Six runs' spread around a point's time (about +-1%), and another draw of the same noise.
NOISE_A = (0.990, 1.000, 1.010, 0.995, 1.005, 1.002)
NOISE_B = (1.004, 0.992, 1.008, 0.998, 1.001, 0.996)


def sweep(
    path,
    factor: float = 1.0,
    noise=NOISE_A,
    *,
    tags: dict | None = None,
    commit: str = "a" * 40,
    job: str = "job",
    digest: str = "d1",
    params: dict | None = None,
    mode: str = "strong",
    sizes=(1, 2),
    backends=("local", "dask"),
    numpy: str = "2.0.0",
):
    """A results file of a sweep whose time at size n is factor / n, with the given noise."""
    with ResultsWriter(path) as writer:
        for backend in backends:
            for n in sizes:
                for i, x in enumerate(noise):
                    r = record(backend, n, factor * x / n, digest=digest)
                    r["job"]["name"] = job
                    r["job"]["stages"] = [
                        {"name": "s", "workload": "primes", "params": params or {"n": 10**9}}
                    ]
                    r["labels"] = {"mode": mode, "axis": "workers", "size": n, "workers": n,
                                   "round": i, "base_digest": digest}  # fmt: skip
                    r["environment"] = {**r["environment"], "packages": {"numpy": numpy}}
                    r["source"] = {"path": "/src/jobs", "commit": commit, "dirty": False}
                    if tags:
                        r["tags"] = tags
                    writer.append(r)
    return str(path)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_twenty_percent_slower_is_slower_and_exits_1(tmp_path, capsys):
    a = sweep(tmp_path / "a.jsonl")
    b = sweep(tmp_path / "b.jsonl", factor=1.2)
    code, out, _ = run(capsys, a, b, "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["exit_code"] == 1
    assert len(report["points"]) == 4
    for point in report["points"]:
        assert point["verdict"] == "slower"
        assert point["regression"] is True
        assert point["ratio"] == pytest.approx(1.2, rel=0.02)
        assert point["ratio_low"] <= point["ratio"] <= point["ratio_high"]
        assert point["ratio_low"] > 1.05  # the whole interval is beyond the tolerance
        assert point["ratio_level"] >= 0.95
    code, out, _ = run(capsys, a, b)
    assert code == 1
    assert "slower (beyond tolerance)" in out
    assert "B is slower than A beyond the 5% tolerance at 4 of 4 point(s)" in out


def test_results_within_noise_cannot_be_told_apart_and_exit_0(tmp_path, capsys):
    a = sweep(tmp_path / "a.jsonl")
    b = sweep(tmp_path / "b.jsonl", noise=NOISE_B)
    code, out, _ = run(capsys, a, b, "--format", "json")
    assert code == 0
    verdicts = {p["verdict"] for p in json.loads(out)["points"]}
    assert verdicts == {"cannot tell apart"}
    code, out, _ = run(capsys, a, b, "--format", "markdown")
    assert code == 0
    assert "| cannot tell apart |" in out
    assert "Nothing is slower beyond the 5% tolerance" in out


def test_a_real_slowdown_within_the_tolerance_passes_unless_the_tolerance_is_smaller(
    tmp_path, capsys
):
    a = sweep(tmp_path / "a.jsonl", noise=(1.0, 1.0005, 0.9995, 1.001, 0.999, 1.0002))
    b = sweep(tmp_path / "b.jsonl", factor=1.03, noise=(1.0, 1.0005, 0.9995, 1.001, 0.999, 1.0))
    code, out, _ = run(capsys, a, b)
    assert code == 0
    assert "within the 5% tolerance" in out
    code, out, _ = run(capsys, a, b, "--tolerance", "1")
    assert code == 1


def test_what_differs_is_said_before_the_table(tmp_path, capsys):
    a = sweep(tmp_path / "a.jsonl", commit="1" * 40, tags={"variant": "old"})
    b = sweep(
        tmp_path / "b.jsonl", commit="2" * 40, tags={"variant": "new"}, numpy="2.1.0",
        digest="d2", params={"n": 10**10},
    )  # fmt: skip
    code, out, _ = run(capsys, a, b)
    assert code == 0
    differs = out.index("what differs")
    table = out.index("B against A")
    assert differs < table
    block = out[differs:table]
    for expected in ("11111111", "22222222", "variant=old", "variant=new", "2.0.0", "2.1.0",
                     "n = 1e9", "n = 1e10"):  # fmt: skip
        assert expected in block, expected
    same = next(line for line in out.splitlines() if line.startswith("the same in both:"))
    assert "machine" in same and "numpy" not in same
    code, out, _ = run(capsys, a, b, "--format", "json")
    whats = {d["what"] for d in json.loads(out)["differences"]}
    assert {"git commit", "tags", "numpy", "parameters"} <= whats
    assert "machine" in json.loads(out)["same"]


def test_select_compares_two_tags_of_one_folder(tmp_path, capsys):
    sweep(tmp_path / "old.jsonl", tags={"variant": "old"})
    sweep(tmp_path / "new.jsonl", factor=1.2, tags={"variant": "new"})
    folder = str(tmp_path)
    code, _, _ = run(
        capsys, folder, folder, "--select-a", "variant=old", "--select-b", "variant=new"
    )
    assert code == 1
    code, _, _ = run(
        capsys, folder, folder, "--select-a", "variant=old", "--select-b", "variant=old"
    )
    assert code == 0


def test_compare_writes_an_html_page(tmp_path, capsys):
    a = sweep(tmp_path / "a.jsonl")
    b = sweep(tmp_path / "b.jsonl", factor=1.2)
    page = tmp_path / "compare.html"
    code, _, _ = run(capsys, a, b, "--html", str(page))
    assert code == 1
    text = page.read_text()
    assert "<svg" in text and "beyond tolerance" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched


@pytest.mark.parametrize(
    "make_b, extra, message",
    [
        (lambda p: sweep(p, job="other"), (), "ran job other"),
        (lambda p: sweep(p, mode="weak"), (), "with mode weak"),
        (lambda p: sweep(p, backends=("ray",)), (), "no point was timed on both sides"),
        (lambda p: (p.write_text(""), str(p))[1], (), "hold no runs"),
        (lambda p: (p.write_text("hello\n"), str(p))[1], (), "not JSON"),
        (lambda p: sweep(p), ("--select", "variant=x"), "no runs tagged variant=x"),
        (lambda p: sweep(p), ("--select", "no-equals"), "expected KEY=VALUE"),
        (lambda p: str(p.with_name("missing.jsonl")), (), "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make_b, extra, message):
    a = sweep(tmp_path / "a.jsonl")
    b = make_b(tmp_path / "b.jsonl")
    code, out, err = run(capsys, a, b, *extra)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("runner: error: ")
    assert message in lines[0]
