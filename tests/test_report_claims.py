"""Each claim a report makes (issue 14), on crafted records: intervals labelled with the level
they reach, verdicts that say "cannot tell apart" when the runs cannot, an explicit speedup
reference, the best point and the largest, sizes beyond the CPUs, the law the data choose and
no extrapolation from too few sizes, Karp-Flatt's trend, cold runs, hygiene warnings, the mix
refusal that names what differs, and all of it as numbers in JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_report import ENV, amdahl_sweep, record

from cluster_runner.analysis.aggregate import aggregate_records
from cluster_runner.analysis.models import fit_law, number
from cluster_runner.analysis.report import csv_report, json_report, markdown_report
from cluster_runner.analysis.words import conclusions
from cluster_runner.cli import main
from cluster_runner.errors import MixedResultsError, UsageError
from cluster_runner.results import ResultsWriter

TWO_CPUS = {**ENV, "cpu_logical": 2}


def usl_sweep(backend="local", sizes=(1, 2, 3, 4), runs=5, sigma=0.1, kappa=0.08, env=None):
    """Runs whose throughput follows the USL, 2% log-normal noise (seeded)."""
    rng = np.random.default_rng(3)
    out = []
    for n in sizes:
        x = n / (1 + sigma * (n - 1) + kappa * n * (n - 1))
        for _ in range(runs):
            wall = float(np.exp(rng.normal(0, 0.02)) / x)
            out.append(("u.jsonl", record(backend, n, wall, env=env)))
    return out


def lines_of(tagged, baseline=None) -> str:
    return "\n".join(conclusions(aggregate_records(tagged, baseline)))


# --- intervals labelled with the level they reach ---------------------------------------------


def test_three_runs_are_labelled_75_percent_never_95():
    exp = aggregate_records(amdahl_sweep("local", 4.0, 0.1, sizes=(1, 2)))
    text = markdown_report(exp)
    assert "| 75% CI s |" in text  # the median's interval: 1 - 2 / 2**3
    assert "| 90% CI |" in text  # the speedup's: 3 runs against 3, exact Mann-Whitney
    assert "95% CI s" not in text and "| 95% CI |" not in text
    point = json.loads(json_report(exp))["series"][0]["points"][1]
    assert point["time"]["ci_level"] == pytest.approx(0.75)
    assert point["speedup_level"] == pytest.approx(0.9)
    assert point["speedup_low"] < point["speedup"] < point["speedup_high"]


def test_points_with_different_run_counts_carry_their_level_in_each_cell():
    exp = aggregate_records(amdahl_sweep("a", 4.0, 0.1, sizes=(1, 2)) + amdahl_sweep(
        "b", 4.0, 0.1, sizes=(1, 2), runs=6))  # fmt: skip
    text = markdown_report(exp)
    assert "| CI s (level) |" in text and "(75%)" in text and "(96.9%)" in text


# --- verdicts: a real difference only when the runs can show one -----------------------------


def test_three_runs_against_three_cannot_tell_even_a_twofold_difference():
    text = lines_of(amdahl_sweep("fast", 4.0, 0.1) + amdahl_sweep("slow", 8.0, 0.1))
    (fastest,) = [x for x in text.splitlines() if x.startswith("Fastest at 8 workers")]
    assert "cannot tell apart" in fastest and "add --repeat" in fastest
    assert "a real difference" not in text
    exp = aggregate_records(amdahl_sweep("fast", 4.0, 0.1) + amdahl_sweep("slow", 8.0, 0.1))
    assert exp.fastest.verdict == "cannot tell apart" and exp.fastest.min_repeats == 4
    assert exp.scaling.verdict == "cannot tell apart" and not exp.scaling.reachable


def test_five_runs_show_the_twofold_difference():
    tagged = amdahl_sweep("fast", 4.0, 0.1, runs=5) + amdahl_sweep("slow", 8.0, 0.1, runs=5)
    exp = aggregate_records(tagged)
    assert exp.fastest.verdict == "faster" and exp.fastest.p_value < 0.05
    assert exp.fastest.low > 1.9 and exp.fastest.fastest == "fast"
    assert "a real difference" in lines_of(tagged)


# --- the speedup's reference ------------------------------------------------------------------


def test_one_size_per_backend_without_serial_computes_no_speedup():
    tagged = [("s.jsonl", record(b, 2, t)) for b, t in (("local", 0.5), ("dask", 0.7))] * 3
    exp = aggregate_records(tagged)
    assert all(p.speedup is None and p.efficiency is None for s in exp.series for p in s.points)
    text = lines_of(tagged)
    assert text.startswith("No speedup can be computed") and "--backend serial" in text
    assert "1.00" not in markdown_report(exp).split("**scaling**")[1].split("\n\n")[1]


def test_one_size_per_backend_compares_against_serial_when_it_was_timed():
    tagged = [("s.jsonl", record(b, n, t)) for b, n, t in (
        ("serial", 1, 1.0), ("local", 2, 0.6), ("dask", 2, 0.8))] * 3  # fmt: skip
    exp = aggregate_records(tagged)
    assert exp.baseline.spec == "serial@1" and exp.baseline.source == "serial"
    local = next(s for s in exp.series if s.backend == "local").points[0]
    assert local.speedup == pytest.approx(1 / 0.6) and local.efficiency == pytest.approx(1 / 1.2)
    assert "Speedups are relative to serial at 1 worker" in lines_of(tagged)
    serial = next(s for s in exp.series if s.backend == "serial").points[0]
    assert serial.reference and "| reference |" in markdown_report(exp)


def test_an_explicit_baseline_is_used_and_a_missing_one_is_refused():
    tagged = amdahl_sweep("local", 4.0, 0.1, sizes=(1, 2, 4)) + amdahl_sweep(
        "dask", 6.0, 0.1, sizes=(1, 2, 4))  # fmt: skip
    exp = aggregate_records(tagged, "local@1")
    dask4 = next(s for s in exp.series if s.backend == "dask").points[-1]
    assert dask4.speedup == pytest.approx(4.0 / (6.0 * (0.1 + 0.9 / 4)))
    assert exp.baseline.source == "--baseline"
    with pytest.raises(UsageError, match=r"no verified runs of dask at size 8.*timed: dask@1"):
        aggregate_records(tagged, "dask@8")
    with pytest.raises(UsageError, match="expected serial, BACKEND@N"):
        aggregate_records(tagged, "local@two")


def test_report_command_refuses_a_bad_baseline_in_one_line(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        for _, r in amdahl_sweep("local", 4.0, 0.1, sizes=(1, 2)):
            writer.append(r)
    assert main(["report", str(path), "--baseline", "ray@2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("runner: error: --baseline ray@2: no verified runs") and "\n" not in err
    assert main(["report", str(path), "--baseline", "local@1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"]["spec"] == "local@1"


# --- the headline: the best point and the largest; sizes beyond the CPUs -----------------------


def test_headline_names_the_best_point_and_the_largest_and_marks_oversubscription():
    tagged = usl_sweep(env=TWO_CPUS)  # peaks near 3 workers, 2 CPUs
    exp = aggregate_records(tagged)
    best = max(exp.series[0].points, key=lambda p: p.speedup)
    first = conclusions(exp)[0]
    assert first.startswith(f"Best point: local, speedup {best.speedup:.2f}x at {best.size}")
    assert "its best point; at its largest size, 4 workers, more workers than the 2 CPUs" in first
    assert "3 and 4 workers exceed this machine's 2 CPUs" in lines_of(tagged)
    table = markdown_report(exp)
    assert "| local | 3\\* |" in table and "| local | 2 |" in table
    points = json.loads(json_report(exp))["series"][0]["points"]
    assert [p["oversubscribed"] for p in points] == [False, False, True, True]
    assert points[0]["cpus"] == 2


def test_an_existing_clusters_workers_are_not_measured_against_the_drivers_cpus():
    tagged = [("c.jsonl", record("dask", n, 1.0 / n, env=TWO_CPUS, address="tcp://h:8786"))
              for n in (1, 2, 4) for _ in range(3)]  # fmt: skip
    exp = aggregate_records(tagged)
    assert not any(p.oversubscribed for p in exp.series[0].points) and exp.cpus is None


# --- models chosen by the data, no extrapolation from too few sizes ----------------------------


def test_two_sizes_give_no_error_claim_and_no_extrapolation():
    exp = aggregate_records(amdahl_sweep("local", 4.0, 0.1, sizes=(1, 2)))
    (series,) = exp.series
    assert series.predictions == {} and not series.may_extrapolate()
    text = lines_of(amdahl_sweep("local", 4.0, 0.1, sizes=(1, 2)))
    assert "rms error" not in text and "exactly determined" in text
    assert "not extrapolated: too few sizes" in markdown_report(exp)


def test_usl_is_chosen_with_its_peak_and_retrograde_region_in_words_and_numbers():
    tagged = usl_sweep(sizes=(1, 2, 3, 4, 6, 8))
    exp = aggregate_records(tagged)
    (series,) = exp.series
    assert series.fit == "usl"
    usl = series.chosen
    assert usl.peak == pytest.approx(np.sqrt(0.9 / 0.08), rel=0.1)
    assert usl.peak_low < usl.peak < usl.peak_high
    text = lines_of(tagged)
    assert "USL fits best (AICc" in text and "retrograde region" in text
    assert "4, 6, 8 workers lie in its retrograde region" in text
    model = json.loads(json_report(exp))["series"][0]["models"]
    assert model["best"] == "usl" and model["criterion"] == "AICc"
    kappa = next(
        c for f in model["fits"] if f["model"] == "usl" for c in f["coefficients"]
        if c["name"] == "kappa"
    )  # fmt: skip
    assert kappa["low"] < kappa["value"] < kappa["high"] and kappa["level"] == 0.95


def test_a_kappa_at_its_bound_prints_as_zero():
    # The R usl package's ray tracer data: its published kappa is 0 (see test_models).
    cpus = [1, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64]
    tput = [20, 78, 130, 170, 190, 200, 210, 230, 260, 280, 310]
    fit = fit_law("usl", cpus, tput, residuals="absolute")
    kappa = next(c for c in fit.coefficients if c.name == "kappa")
    assert kappa.value == 0.0 and "kappa 0 (" in fit.words
    assert number(1e-17) == "0" and number(0.0123) == "0.0123"


def test_karp_flatt_trend_is_read_out_in_words():
    growing = lines_of(usl_sweep(sizes=(1, 2, 3, 4, 6, 8)))
    assert "the Karp-Flatt serial fraction grows with the workers" in growing
    flat = lines_of(amdahl_sweep("local", 8.0, 0.1))
    assert "the Karp-Flatt serial fraction stays about constant" in flat
    trend = aggregate_records(amdahl_sweep("local", 8.0, 0.1)).series[0].trend
    assert trend.kind == "constant" and trend.low <= 0 <= trend.high


def test_weak_scaling_reports_gustafsons_fraction_with_its_interval():
    tagged = []
    for n in (1, 2, 4, 8):
        labels = {"mode": "weak", "axis": "workers", "size": n, "factor": n, "base_digest": "d1"}
        t = n / (n - 0.2 * (n - 1))
        tagged += [("w.jsonl", record("local", n, t * (1 + 0.01 * i), labels=labels))
                   for i in (-1, 0, 1)]  # fmt: skip
    exp = aggregate_records(tagged)
    alpha = json.loads(json_report(exp))["series"][0]["gustafson"]
    assert alpha["value"] == pytest.approx(0.2, abs=0.01) and alpha["low"] < 0.2 < alpha["high"]
    assert "Gustafson's serial fraction" in lines_of(tagged)
    assert exp.series[0].predictions  # 4 sizes: 1 coefficient + 2 allow it


# --- cold runs, hygiene, precision ------------------------------------------------------------


def cold_point(first: float, flag: bool = True) -> list:
    """A sweep point's runs (labelled, numbered); the first recorded ``cold`` when ``flag``."""
    labels = {"mode": "strong", "axis": "workers", "size": 1}
    runs = [record("serial", 1, t, labels=labels) for t in (first, 0.30, 0.31, 0.29, 0.30)]
    for i, r in enumerate(runs):
        r["repeat"] = i
    runs[0]["cold"] = flag
    return [("c.jsonl", r) for r in runs]


def test_a_cold_first_run_is_left_out_and_said_so():
    exp = aggregate_records(cold_point(0.9))
    point = exp.series[0].points[0]
    assert point.runs == 4 and point.cold_left_out == 1 and 0.9 not in point.samples
    assert any(f.kind == "cold" and f.fix == "--warmup 1" for f in exp.findings)
    assert "was cold" in lines_of(cold_point(0.9)) and "left out of every figure" in lines_of(
        cold_point(0.9)
    )
    assert "4 (+1 cold)" in markdown_report(exp)


def test_a_first_run_flagged_cold_but_not_slow_is_kept():
    point = aggregate_records(cold_point(0.305)).series[0].points[0]
    assert point.runs == 5 and point.cold_left_out == 0
    # A slow first run not recorded cold (a warm-up ran before it) is an outlier: kept.
    point = aggregate_records(cold_point(0.9, flag=False)).series[0].points[0]
    assert point.runs == 5 and point.outliers == (1,)


def test_a_submit_record_written_before_the_cold_flag_is_judged_by_its_number():
    runs = [record("serial", 1, t) for t in (0.9, 0.30, 0.31, 0.29)]  # one submit, --repeat 4
    for i, r in enumerate(runs):
        r["repeat"] = i
    point = aggregate_records([("old.jsonl", r) for r in runs]).series[0].points[0]
    assert point.cold_left_out == 1 and point.runs == 3


def test_outliers_are_flagged_kept_and_every_warning_is_an_item_with_its_fix():
    times = [1.0, 1.01, 0.99, 1.0, 2.5, 1.0]
    tagged = [("o.jsonl", record("local", 1, t)) for t in times]
    exp = aggregate_records(tagged)
    point = exp.series[0].points[0]
    assert point.runs == 6 and point.outliers == (5,) and point.cv > 0.1
    findings = json.loads(json_report(exp))["findings"]
    kinds = {f["kind"]: f for f in findings}
    assert kinds["outliers"]["where"] == "local at 1 worker"
    assert kinds["noisy"]["fix"] == "--repeat 10"
    assert "run(s) 5 are outliers" in lines_of(tagged)
    assert "cv" in csv_report(exp).splitlines()[0]


def test_a_point_short_of_the_sweeps_precision_target_says_so():
    tagged = [("p.jsonl", record("local", 1, t, labels={"precision": 1.0}))
              for t in (1.0, 1.05, 0.95, 1.1, 0.9, 1.02)]  # fmt: skip
    exp = aggregate_records(tagged)
    (finding,) = [f for f in exp.findings if f.kind == "precision"]
    assert "target 1%" in finding.text and finding.fix == "--max-repeats"


# --- the mix refusal names what differs ----------------------------------------------------------


def with_n(r: dict, n: int) -> dict:
    r["job"]["stages"] = [
        {"name": "primes", "workload": "primes", "weak": "n", "params": {"n": n, "chunks": 64}}
    ]
    return r


def test_mix_refusal_names_the_parameters_that_differ():
    tagged = [
        ("a.jsonl", with_n(record("local", 1, 1.0), 10**9)),
        ("b.jsonl", with_n(record("local", 2, 0.5, digest="d2"), 10**10)),
    ]
    with pytest.raises(MixedResultsError) as caught:
        aggregate_records(tagged)
    message = str(caught.value)
    assert "a.jsonl has job job with n = 1e9, b.jsonl has n = 1e10" in message
    assert "digest" not in message


def test_a_weak_sweeps_scaled_parameter_is_not_a_difference():
    labels = {"mode": "weak", "axis": "workers", "base_digest": "b1"}
    one = with_n(record("local", 1, 1.0, labels={**labels, "size": 1, "factor": 1}), 10**9)
    two = with_n(record("local", 2, 1.1, labels={**labels, "size": 2, "factor": 2}), 2 * 10**9)
    three = with_n(record("local", 2, 1.1, labels={**labels, "size": 2, "factor": 2,
                                                    "base_digest": "b2"}), 4 * 10**9)  # fmt: skip
    aggregate_records([("w.jsonl", one), ("w.jsonl", two)])  # one experiment
    with pytest.raises(MixedResultsError, match=r"n = 1e9, x\.jsonl has n = 2e9"):
        aggregate_records([("w.jsonl", one), ("x.jsonl", three)])


# --- the report's verdicts, simulated ---------------------------------------------------------


def test_report_verdicts_rarely_call_one_distribution_different_and_see_a_real_gap():
    # Two backends drawn from one distribution (10% log-normal noise, 5 runs a point): the
    # report may call their times or their scaling different at most 5% of the time (within
    # Monte Carlo error: 2 points, about 1.6 standard errors at 300 draws; the exact bound at
    # 5 runs against 5 is 3.2%). With one backend's 4-worker time twice the other's, it must
    # see the difference.
    rng = np.random.default_rng(14)

    def verdicts(slow: float, draws: int) -> tuple[float, float]:
        scaling = times = 0
        for _ in range(draws):
            tagged = [
                ("s.jsonl", record(b, n, float(t)))
                for b, factor in (("a", 1.0), ("b", slow))
                for n, base in ((1, 1.0), (4, 0.3 * factor))
                for t in base * np.exp(rng.normal(0, 0.1, 5))
            ]
            exp = aggregate_records(tagged)
            scaling += exp.scaling.verdict == "different"
            times += exp.fastest.verdict == "faster"
        return scaling / draws, times / draws

    same_scaling, same_times = verdicts(1.0, 300)
    assert same_scaling <= 0.07 and same_times <= 0.07
    gap_scaling, gap_times = verdicts(2.0, 50)
    assert gap_scaling >= 0.9 and gap_times >= 0.9
