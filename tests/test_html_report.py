"""The HTML report as a person sees it: rendered by a real headless Chromium, offline.

Checks that the page loads with no console error, fetches nothing but itself (no CDN), and
that its plots and timelines are drawn; keeps a screenshot of the whole page. Skipped where
Chromium is not installed (``.ci/run`` installs it: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from browser import chromium, visit
from test_compare import sweep
from test_timeline import run_with_timeline, write

from cluster_runner.cli import main
from cluster_runner.results import read_records

from conftest import ROOT, runner_command

pytestmark = pytest.mark.skipif(
    chromium() is None, reason="needs chromium (apt-get install chromium)"
)

#: What the page shows once loaded, as the DOM has it: per plot, its drawn SVG elements; per
#: timeline, its worker rows (the axis labels that say how busy each worker was).
DOM = """JSON.stringify({
  plots: [...document.querySelectorAll('figure.plot')].map(
      f => f.querySelectorAll('svg path, svg use, svg rect, img').length),
  timelines: [...document.querySelectorAll('figure.timeline')].map(f => {
      const img = f.querySelector('img');
      if (img) { return {rows: -1, drawn: img.complete && img.naturalWidth > 0}; }
      const rows = [...f.querySelectorAll('svg text')].filter(t => /busy\\)$/.test(t.textContent));
      return {rows: rows.length, drawn: f.querySelectorAll('svg path').length > 10,
              title: f.querySelector('figcaption').textContent}; }),
  tables: document.querySelectorAll('table').length,
  links: [...document.querySelectorAll('#traces ~ ul a')].map(a => a.href),
  width: document.documentElement.scrollWidth,
})"""


def check_page(page: Path, screenshot: Path) -> dict:
    """Render ``page``; assert it loaded clean and offline; return what the DOM holds."""
    seen = visit(page, DOM, screenshot)
    assert seen.errors == [], seen.errors
    assert all(url.startswith(("file:", "data:")) for url in seen.requests), seen.requests
    dom = json.loads(seen.dom)
    assert dom["plots"] and all(n > 20 for n in dom["plots"]), dom["plots"]
    assert dom["tables"] >= 2
    assert len(seen.screenshot) > 50_000 and _colours(screenshot) > 20  # not a blank page
    return dom


def _colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ())


def test_report_of_crafted_runs_renders_with_its_timeline(tmp_path, capsys):
    records = [run_with_timeline(f"run{i:03d}") for i in range(3)]
    results = write(tmp_path / "r.jsonl", *records)
    page = tmp_path / "report.html"
    assert main(["report", results, "--html", str(page), "--timeline", "run001"]) == 0
    dom = check_page(page, tmp_path / "report.png")
    (timeline,) = dom["timelines"]
    assert timeline["drawn"] and timeline["rows"] == 2 and "run001" in timeline["title"]


def test_comparison_page_renders(tmp_path, capsys):
    a = sweep(tmp_path / "a.jsonl")
    b = sweep(tmp_path / "b.jsonl", factor=1.2)
    page = tmp_path / "compare.html"
    assert main(["compare", a, b, "--html", str(page)]) == 1
    check_page(page, tmp_path / "compare.png")


@pytest.mark.cluster
def test_report_of_a_real_sweep_on_local_dask_and_ray_renders_with_timelines(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run(
        [*runner_command(), "scale", "--job", "primes", "--set", "n=50000000", "--set",
         "chunks=16", "--backend", "local,dask,ray", "--workers", "1,2", "--warmup", "1",
         "--repeat", "2", "--profile", "--tag", "variant=html", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    (results,) = out.glob("*.jsonl")
    traces = sorted(p.name for p in (out / f"{results.stem}.profile").iterdir())
    assert traces == ["dask-x1.html", "dask-x2.html", "ray-x1.json", "ray-x2.json"]
    assert json.loads((out / f"{results.stem}.profile" / "ray-x2.json").read_text())  # events
    assert all(r.tags == {"variant": "html"} for r in read_records([results]))
    page = tmp_path / "report.html"
    shown = subprocess.run(
        [*runner_command(), "report", str(results), "--html", str(page)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    dom = check_page(page, tmp_path / "report.png")
    timelines = dom["timelines"]
    assert len(timelines) == 3  # each backend's median run at 2 workers
    titles = " ".join(t["title"] for t in timelines)
    for backend in ("local x2", "dask x2", "ray x2"):
        assert backend in titles
    assert all(t["drawn"] and 1 <= t["rows"] <= 2 for t in timelines)
    assert any(t["rows"] == 2 for t in timelines)
    assert sorted(Path(link).name for link in dom["links"]) == traces
    assert all(Path(link.removeprefix("file://")).is_file() for link in dom["links"])
