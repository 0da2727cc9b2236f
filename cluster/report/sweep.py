"""The HTML report of one or more sweeps: learning curves (validation metric by trial-epoch) and trials.

Given the sweeps of one config run with ``init: pretrained`` and ``init: random``, the
curves of both are drawn in one figure, coloured by init (cluster/report/figures.py
``learning_curves``): the founding claim (pretraining converges faster and ends
better) is read off it. The page is cluster/report/templates/sweep.html.j2 with the figure
as inline SVG, so the report stays one self-contained file.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from cluster.report import figures
from cluster.report.html import environment, write_html


def write_sweep_report(summaries: list[dict], path: str | Path) -> Path:
    """Write report.html for sweep summaries (jobs/sweep.py ``export_best``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_html(render_sweeps(summaries), path)


def render_sweeps(summaries: list[dict]) -> str:
    """The report as an HTML string."""
    metric = summaries[0].get("metric", "f1_macro")
    curves = Markup(figures.learning_curves(summaries, metric))  # the figure escapes its own text
    template = environment().get_template("sweep.html.j2")
    return template.render(summaries=summaries, metric=metric, curves=curves)
