"""What moved between driver and workers, in ``runner report`` and ``runner compare`` (issue 21).

A user's workload declares a driver input (``@workload(..., data=...)``: an array made in the
driver) and runs through the real command line (``runner scale``, serial, threads and the
local pool), once with ``--transfer share`` and once with ``--transfer copy``, into results
files as every user gets them. The reports read those files: the transfer columns show the
bytes each mode moved (a copy per task message with ``copy``; nothing on serial and threads,
which share by reference; the input once on the local pool's shared memory), the put time
with its share of the run (or "in tasks" with ``copy``), in every format; a report of runs
without driver inputs is exactly what it was before; one report refuses to mix the two
modes, and ``runner compare`` compares them and names the difference.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest

from cluster_runner.analysis import folding
from cluster_runner.analysis.aggregate import aggregate
from cluster_runner.analysis.report import json_report
from cluster_runner.analysis.transfer import bytes_text
from cluster_runner.cli import main
from cluster_runner.workloads.naming import forget

KIB = 512  # the driver input: an array of 512 KiB
CHUNKS = 4

WORKLOAD = f'''
"""Strided sums of an array the driver makes (a driver input), and the same without one."""
import numpy as np

from cluster_runner import workload


def split(kib: int = {KIB}, chunks: int = {CHUNKS}):
    return [(i, chunks) for i in range(chunks)]


def table(kib: int = {KIB}):
    return np.arange(kib * 128, dtype=np.float64)  # kib KiB


@workload(split=split, reduce=sum, data=table)
def strided(index, chunks, data):
    return float(data[index::chunks].sum())


@workload(split=split, reduce=sum)
def inside(index, chunks):
    return float(np.arange(index, {KIB} * 128, chunks, dtype=np.float64).sum())
'''

MODULE = "transfer_report_wl"


def _unload() -> None:
    forget()
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    """``runner scale`` of the workload with ``--transfer share`` and ``copy``, and of the one
    without driver inputs: each a results folder."""
    root = tmp_path_factory.mktemp("transfer")
    (root / f"{MODULE}.py").write_text(WORKLOAD)
    (root / "strided.toml").write_text(f'[[stage]]\nworkload = "{MODULE}.py:strided"\n')
    (root / "inside.toml").write_text(f'[[stage]]\nworkload = "{MODULE}.py:inside"\n')
    _unload()
    out = {}
    runs = [("share", "strided", "share"), ("copy", "strided", "copy"), ("none", "inside", "share")]
    try:
        for name, job, mode in runs:
            out[name] = root / name
            code = main(
                ["scale", "--job", str(root / f"{job}.toml"), "--backend", "serial,threads,local",
                 "--workers", "1,2", "--repeat", "2", "--warmup", "0", "--transfer", mode,
                 "--out", str(out[name])]
            )  # fmt: skip
            assert code == 0, name
    finally:
        _unload()
    return out


def report(args: list[str], capsys) -> str:
    assert main(["report", *map(str, args)]) == 0
    return capsys.readouterr().out


def points(folder: Path, capsys) -> dict[tuple[str, int], dict]:
    data = json.loads(report([folder, "--format", "json"], capsys))
    return {(p["backend"], p["size"]): p for s in data["series"] for p in s["points"]}


def test_copy_moves_the_input_with_every_task_and_share_places_it_once(sweeps, capsys):
    share, copy = points(sweeps["share"], capsys), points(sweeps["copy"], capsys)
    assert set(share) == set(copy) == {
        ("serial", 1), ("threads", 1), ("threads", 2), ("local", 1), ("local", 2),
    }  # fmt: skip
    array_bytes = KIB * 1024
    for key, p in copy.items():
        moved = p["transfer"]
        assert moved["mode"] == "copy", key
        assert array_bytes <= moved["input_bytes"] < array_bytes + 1024  # pickled, with framing
        assert moved["messages"] == CHUNKS  # one message per chunk task carries the array
        assert moved["moved_bytes"] == moved["sent_bytes"] == CHUNKS * moved["input_bytes"]
        assert moved["put_s"] is None and moved["put_share"] is None  # not timed apart
    for backend in ("serial", "threads"):
        for key in [k for k in share if k[0] == backend]:
            moved = share[key]["transfer"]
            assert (moved["mode"], moved["method"]) == ("share", "by reference")
            assert moved["moved_bytes"] == 0
            assert 0 < moved["put_share"] < 1
    for key in (("local", 1), ("local", 2)):
        moved = share[key]["transfer"]
        assert moved["method"] == "shared memory"
        # the array once (in shared memory), and a small handle a message
        assert array_bytes <= moved["moved_bytes"] < array_bytes + 64 * 1024
        assert moved["moved_bytes"] < copy[key]["transfer"]["moved_bytes"] / 2
        assert moved["put_s"] > 0 and 0 < moved["put_share"] < 1


def test_the_table_shows_the_bytes_and_the_put_time_with_its_share(sweeps, capsys):
    copy = points(sweeps["copy"], capsys)
    text = report([sweeps["copy"]], capsys)
    assert "moved (copy)" in text and "put (of run)" in text
    local = next(line for line in text.splitlines() if line.strip().startswith("local"))
    assert bytes_text(copy[("local", 2)]["transfer"]["moved_bytes"]) == "2.00 MiB"
    assert "2.00 MiB" in local and "in tasks" in local
    assert "put: in tasks" in text  # what the column means, in words

    text = report([sweeps["share"], "--format", "markdown"], capsys)
    times = text.split("**run times**", 1)[1].split("**scaling**", 1)[0].strip().splitlines()
    assert times[0].endswith("| moved (share) | put (of run) |")
    rows = {tuple(line.split(" | ")[:2]): line for line in times[2:]}
    assert "| 0 B by reference |" in rows["| serial", "1"]
    assert "| 512 KiB |" in rows["| local", "2"]
    put = rows["| local", "2"].rstrip(" |").rsplit(" | ", 1)[1]
    assert re.fullmatch(r"[\d.]+ (s|ms|us) \((\d+%|<1%)\)", put), put
    assert "local: shared memory" in text and "threads: by reference" in text


def test_csv_holds_the_transfer_as_plain_numbers(sweeps, capsys):
    rows = list(csv.DictReader(io.StringIO(report([sweeps["copy"], "--format", "csv"], capsys))))
    assert len(rows) == 5
    for row in rows:
        assert row["transfer_mode"] == "copy"
        assert int(row["moved_bytes"]) == CHUNKS * int(row["input_bytes"])
        assert int(row["messages"]) == CHUNKS and row["put_s"] == ""


def test_a_report_without_driver_inputs_is_what_it_was(sweeps, capsys, tmp_path):
    """Runs without driver inputs (no ``transfer`` written, as before issue 21) and a record
    that says ``inputs == 0`` report exactly alike, with no transfer column in any format; a
    results file of runs with inputs, read without them, reports as it would have before."""
    (path,) = sweeps["none"].glob("*.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert all("transfer" not in s for r in records for s in r["stages"])
    formats = ["table", "markdown", "csv", "json"]
    before = {f: report([path, "--format", f], capsys) for f in formats}
    for r in records:
        for stage in r["stages"]:
            stage["transfer"] = {"mode": "share", "inputs": 0, "returned_bytes": 64}
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert {f: report([path, "--format", f], capsys) for f in formats} == before
    assert "moved" not in before["table"] and "put (of run)" not in before["markdown"]
    assert "moved_bytes" not in before["csv"].splitlines()[0]
    data = json.loads(before["json"])
    assert all("transfer" not in p for s in data["series"] for p in s["points"])

    (shared,) = sweeps["share"].glob("*.jsonl")
    old = tmp_path / "old.jsonl"
    lines = [json.loads(line) for line in shared.read_text().splitlines()]
    for r in lines:
        for stage in r["stages"]:
            stage.pop("transfer", None)
    old.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert "moved" not in report([old], capsys)


def test_one_report_refuses_to_mix_share_and_copy(sweeps, capsys):
    (share,), (copy,) = sweeps["share"].glob("*.jsonl"), sweeps["copy"].glob("*.jsonl")
    assert main(["report", str(share), str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("runner: error: refusing to mix")
    assert f"{share} has transfer share, {copy} has transfer copy" in err
    assert main(["report", str(copy), str(share), "--format", "json"]) == 2
    assert "has transfer copy" in capsys.readouterr().err


def test_compare_names_the_transfer_as_what_differs(sweeps, capsys):
    code = main(["compare", str(sweeps["share"]), str(sweeps["copy"]), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == data["exit_code"] in (0, 1)  # whichever the times say
    assert data["differences"] == [{"what": "transfer", "a": "share", "b": "copy"}]
    compared = [p for p in data["points"] if p["ratio"] is not None]
    assert len(compared) == 5
    for p in compared:
        assert (p["a"]["transfer"]["mode"], p["b"]["transfer"]["mode"]) == ("share", "copy")
    main(["compare", str(sweeps["share"]), str(sweeps["copy"])])
    table = capsys.readouterr().out
    assert re.search(r"transfer\s+share\s+copy", table)


def test_a_big_file_folded_in_parallel_keeps_the_transfer_of_each_run(
    sweeps, tmp_path, monkeypatch
):
    """Runs with and without the transfer in one point (half the file from before issue 21),
    folded in byte ranges by worker processes, give the report one sequential read gives."""
    (copy,) = sweeps["copy"].glob("*.jsonl")
    lines = copy.read_text().splitlines()
    mixed = []
    for i, line in enumerate(lines * 3):
        record = json.loads(line)
        if (i + i // len(lines)) % 2:  # each run with its transfer in one copy, without in another
            for stage in record["stages"]:
                stage.pop("transfer", None)
        mixed.append(json.dumps(record))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(mixed) + "\n")
    in_order = json_report(aggregate([path], workers=1))
    monkeypatch.setattr(folding, "PARALLEL_BYTES", 1)
    assert folding._fold_in_parallel([path], {path}, 2) is not None  # not read sequentially
    assert json_report(aggregate([path], workers=2)) == in_order
    data = json.loads(in_order)
    for point in (p for s in data["series"] for p in s["points"]):
        assert point["transfer"]["messages"] == CHUNKS  # the runs without it left out


def test_the_stages_of_a_run_are_summed(sweeps, tmp_path, capsys):
    """Two stages with a driver input each (512 and 128 KiB): a run moved both, in copies."""
    job = tmp_path / "two.toml"
    source = sweeps["share"].parent / f"{MODULE}.py"
    job.write_text(
        f'[[stage]]\nname = "one"\nworkload = "{source}:strided"\n'
        f'[[stage]]\nname = "two"\nworkload = "{source}:strided"\nkib = 128\n'
    )
    _unload()
    try:
        code = main(
            ["submit", "--job", str(job), "--backend", "threads", "--workers", "2",
             "--transfer", "copy", "--repeat", "2", "--out", str(tmp_path / "out")]
        )  # fmt: skip
    finally:
        _unload()
    assert code == 0
    capsys.readouterr()
    (point,) = points(tmp_path / "out", capsys).values()
    moved = point["transfer"]
    assert (640 * 1024) <= moved["input_bytes"] < 640 * 1024 + 2048
    assert moved["messages"] == 2 * CHUNKS
    assert moved["moved_bytes"] == CHUNKS * moved["input_bytes"]


def test_the_html_page_has_the_transfer_column(sweeps, tmp_path, capsys):
    page = tmp_path / "report.html"
    report([sweeps["share"], "--html", page], capsys)
    html = page.read_text()
    assert "<th>moved (share)</th><th>put (of run)</th>" in html
    assert "<td>0 B by reference</td>" in html and "<td>512 KiB</td>" in html
    assert '<td class="text">transfer</td><td class="text">share</td>' in html  # environment


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (512 * 1024, "512 KiB"),
     (int(3.05 * 2**20), "3.05 MiB"), (2**30, "1.00 GiB"), (64 * 2**30, "64.0 GiB")],
)  # fmt: skip
def test_bytes_read_in_binary_units(n, text):
    assert bytes_text(n) == text
