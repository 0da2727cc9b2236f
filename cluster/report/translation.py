"""The HTML reports of translation: an evaluation (scores with CIs, length ratio, the worst sentences
beside their references) and the paired comparison of two systems (cluster/report/templates)."""

from __future__ import annotations

from pathlib import Path

from cluster.report.html import environment, lineage_rows, timing_rows, write_html


def render_translation(m: dict) -> str:
    """report.html of a translation evaluation's metrics.json."""
    lineage, timings = lineage_rows(m.get("lineage") or {}), timing_rows(m.get("timings") or {})
    return environment().get_template("translation.html.j2").render(m=m, lineage=lineage, timings=timings)


def write_translation_report(metrics: dict, path: str | Path) -> Path:
    return write_html(render_translation(metrics), path)


def render_translation_comparison(result: dict) -> str:
    """The comparison page of cluster/stats/translation_compare.py's result (jobs/team.py)."""
    return environment().get_template("translation_compare.html.j2").render(r=result)
