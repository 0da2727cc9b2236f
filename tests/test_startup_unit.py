"""Start-up plumbing without Ray: the process clock, evaluation timings, the report's SVG charts,
the lazy command group."""

import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from cluster.clock import Phases, process_age_s, rss_bytes
from cluster.report import svgplots
from tests.conftest import ROOT

SVG = "{http://www.w3.org/2000/svg}"


def test_process_age_counts_from_the_process_start_not_from_import():
    code = "import time; time.sleep(0.6); from cluster.clock import process_age_s; print(process_age_s())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 0.6 <= float(out.stdout) < 60  # the sleep before the import is counted
    assert process_age_s() > 0 and rss_bytes() > 10 * 2**20


def test_timings_are_differences_of_marks():
    from cluster.evaluation.outcome import timings

    p = Phases(start=100.0)
    p.marks["cli_start_s"] = 1.5
    for name, at in [("ray_start", 100.5), ("ray_up", 102.0), ("scan_start", 100.6), ("scan_end", 101.0)]:
        p.mark(name, at)
    for name, at in [
        ("actors_ready", 105.0),
        ("first_result", 105.5),
        ("last_result", 110.0),
        ("done", 110.2),
    ]:
        p.mark(name, at)
    t = timings(p, 1000)
    assert t["ray_init_s"] == 1.5 and t["actors_ready_s"] == 3.0 and t["first_batch_s"] == 0.5
    assert t["inference_s"] == 5.0 and t["finish_s"] == 0.2 and t["scan_s"] == 0.4
    assert t["total_s"] == 10.2 and t["process_s"] == 11.7
    assert t["steady_rows_per_s"] == 200.0 and t["rows_per_s"] == 125.0
    p.mark("done", 999.0)  # the first mark of a name wins
    assert timings(p, 1000)["finish_s"] == 0.2


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return root


def _texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter(f"{SVG}text")]


def test_confusion_matrix_chart_shows_every_count_and_escapes_labels():
    root = _parse(svgplots.confusion([[5, 1], [0, 7]], ["<b>&", "ok"]))
    texts = _texts(root)
    assert {"5", "1", "0", "7"} <= set(texts) and "<b>&" in texts and "ok" in texts
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("fill", "").startswith("#")]
    assert "#08306b" in fills and "#f7fbff" in fills  # the largest count darkest, zero white


def test_reliability_chart_leaves_empty_bins_out():
    count = np.array([0, 3, 0, 5])
    root = _parse(svgplots.reliability(count.tolist(), [0.0, 0.5, 0.0, 1.0], ece=0.1234))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("fill-opacity") == "0.7"]
    assert len(bars) == 2 and "Reliability diagram (ECE 0.123)" in _texts(root)


def test_grouped_bars_one_bar_per_group_and_series():
    root = _parse(svgplots.grouped_bars(["a", "b", "c"], {"p": [0.1, 0.2, 0.3], "r": [1, 0.5, 0]}, "t"))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6


def test_report_renders_in_well_under_a_second_for_10k_rows():
    from cluster.report.html import render
    from cluster.stats.metrics import batch_stats, finalize

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 10_000)
    m = finalize(batch_stats(y, rng.dirichlet([1, 1, 1], 10_000), bootstrap=1000), ["a", "b", "c"])
    m.update(model={"id": "x"}, dataset={"path": "p", "fingerprint": "f"}, precision_mode="fp32", run_id="r")
    t0 = time.process_time()
    page = render(m)
    assert page.count("<svg") == 3
    assert time.process_time() - t0 < 0.5  # CPU time, generous: it takes milliseconds


@pytest.mark.cli
def test_evaluate_command_loads_no_other_workload():
    code = (
        "import sys; from jobs.cli import app; import typer; "
        "g = typer.main.get_command(app); g.get_command(typer.Context(g), 'evaluate'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jobs', 'httpx', 'ray', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == ["jobs", "jobs.cli", "jobs.entry", "jobs.evaluate", "jobs.spec_cli"]


def test_runs_show_prints_the_timings_in_phase_order():
    from rich.console import Console

    from jobs.registry_cli import timings_table

    console = Console(width=200, record=True)
    console.print(
        timings_table({"finish_s": 0.25, "cli_start_s": 1.5, "ray_init_s": 2.0, "rows_per_s": 312.4})
    )
    text = console.export_text()
    assert text.index("cli_start") < text.index("ray_init") < text.index("finish")
    assert "0.25" in text and "312.4" in text and "scan" not in text  # only the phases it has
