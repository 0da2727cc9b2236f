"""The HTML report of one or more sweeps: learning curves (validation metric by trial-epoch) and trials.

Given the sweeps of one config run with ``init: pretrained`` and ``init: random``, the
curves of both are drawn in one figure, coloured by init: the founding claim
(pretraining converges faster and ends better) is read off it. The figure is an
inline SVG, so the report stays one self-contained file.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from cluster.report import CSS

INIT_COLORS = {"pretrained": "#1f77b4", "random": "#d62728"}


def write_sweep_report(summaries: list[dict], path: str | Path) -> Path:
    """Write report.html for sweep summaries (jobs/sweep.py ``export_best``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_sweeps(summaries))
    tmp.replace(path)
    return path


def render_sweeps(summaries: list[dict]) -> str:
    """The report as an HTML string."""
    metric = summaries[0].get("metric", "f1_macro")
    parts = [
        "<h1>Sweep: learning curves</h1>",
        f"<p class=meta>validation {_e(metric)} at each validation of each trial, by trial-epoch; "
        "colour = init (pretrained blue, random red)</p>",
        learning_curves_svg(summaries, metric),
        "<h2>Sweeps</h2>",
        _sweeps_table(summaries, metric),
    ]
    return (
        "<!doctype html><meta charset=utf-8><title>evalcluster: sweep report</title>"
        f"<style>{CSS}</style>" + "\n".join(parts)
    )


def learning_curves_svg(summaries: list[dict], metric: str) -> str:
    """One line per trial, x = trial-epoch, y = the metric; matplotlib rendered as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    labelled = set()
    for s in summaries:
        init = s.get("init", "pretrained")
        for curve in s.get("curves", []):
            label = None if init in labelled else f"init: {init}"
            labelled.add(init)
            ax.plot(curve["epoch"], curve[metric], marker="o", ms=3, color=INIT_COLORS.get(init), label=label)
    ax.set_xlabel("trial-epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend()
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog: inline in HTML


def _sweeps_table(summaries: list[dict], metric: str) -> str:
    head = "<tr><th>sweep run</th><th>init</th><th>trials</th><th>trial-epochs</th>"
    head += f"<th>best {_e(metric)}</th><th>best config</th><th>model</th><th>wall s</th></tr>"
    rows = []
    for s in summaries:
        cells = (
            s.get("run_id", "-"),
            s.get("init", "pretrained"),
            s.get("trials"),
            f"{s.get('trial_epochs', 0):.1f}",
            f"{s.get(metric, float('nan')):.4f}",
            s.get("best_config"),
            s.get("model_id"),
            f"{s.get('wall_s', 0):.0f}",
        )
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _e(x) -> str:
    return html.escape(str(x))
