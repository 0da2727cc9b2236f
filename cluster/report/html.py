"""Self-contained HTML reports (Jinja2 templates in cluster/report/templates, plots inline as SVG).

report.html of an evaluation or robustness run (:func:`render`), the comparison of two
runs (:func:`render_comparison`) and the drift report (:func:`render_drift`). Every value
that comes from data or users is HTML-escaped (Jinja2's autoescape); the figures
(cluster/report/figures.py) escape their own text and are inserted as markup.
"""

from __future__ import annotations

import functools
from pathlib import Path

from markupsafe import Markup

from cluster.report import figures
from cluster.stats.metrics import METRICS

SPECIAL_TOKENS = {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"}

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.plots img{max-width:48%;margin:1%}
.meta{color:#555;font-size:.9em}"""


def write_report(metrics: dict, path: str | Path) -> Path:
    """Write report.html for a metrics.json dict; returns the path."""
    return write_html(render(metrics), path)


def write_html(text: str, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


@functools.lru_cache(maxsize=1)
def environment():
    """Jinja2 templates of cluster/report/templates (HTML-escaped, undefined names are errors)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(m: dict) -> str:
    """The evaluation (or robustness) report as an HTML string."""
    if m.get("task") == "segmentation":  # its own page (cluster/report/segmentation.py)
        from cluster.report.segmentation import context

        page = environment().get_template("segmentation.html.j2")
        return page.render(
            **context(m),
            lineage=lineage_rows(m.get("lineage") or {}),
            timings=timing_rows(m.get("timings") or {}),
        )
    title = "Robustness evaluation" if "robustness" in m else "Evaluation"
    return (
        environment()
        .get_template("evaluation.html.j2")
        .render(
            m=m,
            title=title,
            metric_rows=metric_rows(m),
            fig=report_figures(m),
            mistakes=[
                {**p, "examples": [_with_tokens(e) for e in p["examples"]]} for p in m.get("mistakes", [])
            ],
            lineage=lineage_rows(m.get("lineage") or {}),
            timings=timing_rows(m.get("timings") or {}),
        )
    )


def metric_rows(m: dict) -> list[dict]:
    """The headline and threshold metrics a run has: display name, value, 95% CI (report and dashboard)."""
    ci = m.get("ci95", {})
    names = [k for k in METRICS if k in m and (METRICS[k].headline or METRICS[k].family == "threshold")]
    return [{"display": METRICS[k].display, "value": m[k], "ci": ci.get(k)} for k in names]


def report_figures(m: dict) -> dict[str, str]:
    """The report's figures for a metrics.json dict, by name, as inline SVG markup."""
    fig = {
        "confusion": figures.confusion(m),
        "reliability": figures.reliability(m),
        "per_class": figures.per_class(m),
    }
    if "threshold" in m:
        fig["roc"], fig["pr"] = figures.roc_curves(m["threshold"]), figures.pr_curves(m["threshold"])
    if m.get("auto_slices", {}).get("slices"):
        fig["slices"] = figures.weak_slices(m["auto_slices"])
    if "robustness" in m:
        fig["robustness"] = figures.robustness(m["robustness"])
    return {name: Markup(svg) for name, svg in fig.items()}


def _with_tokens(example: dict) -> dict:
    """An example with its tokens ready to show: special tokens dropped, WordPiece ``##`` pieces
    joined to the word before, a colour per token from its attribution (red: toward the
    prediction, blue: away; opacity = |attribution| / the example's largest)."""
    toks = [t for t in example.get("tokens") or [] if t["token"] not in SPECIAL_TOKENS]
    top = max((abs(t["attribution"]) for t in toks), default=0.0) or 1.0
    shown = []
    for i, t in enumerate(toks):
        a = t["attribution"]
        rgb = "214,39,40" if a > 0 else "31,119,180"
        piece = t["token"][2:] if t["token"].startswith("##") else t["token"]
        join = i == 0 or t["token"].startswith("##")
        shown.append(
            {"text": piece, "join": join, "attribution": a, "color": f"rgba({rgb},{0.6 * abs(a) / top:.2f})"}
        )
    return {**example, "toks": shown}


def lineage_rows(lin: dict) -> list[tuple[str, str]]:
    """(what, value) rows of a model's lineage, in reading order."""
    names = {
        "base_model": "base model",
        "sweep": "sweep",
        "sweep_run": "sweep run",
        "pretrain_run": "pretraining run",
        "trial_id": "best trial",
        "trial_config": "trial configuration",
        "train_data": "training data",
        "train_fingerprint": "training data fingerprint",
        "validation_data": "validation data",
        "validation_metrics": "validation metrics",
    }
    out = []
    for key, name in names.items():
        if key in lin:
            v = lin[key]
            if isinstance(v, dict):
                v = ", ".join(f"{k}={x:.4g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items())
            out.append((name, "not recorded" if v is None else str(v)))
    return out


TIMING_NAMES = {
    "scan_s": "data scan (validation, fingerprint)",
    "ray_init_s": "Ray start / connect",
    "pipeline_s": "inference pipeline (model loading included)",
    "analyses_s": "extra analyses inside the actors (seconds, summed over actors)",
    "finalize_s": "metrics, bootstrap intervals, slices",
    "attributions_s": "token attributions of the mistakes",
    "gate_s": "quality gate",
    "total_s": "total",
    "reference_pipeline_s": "reference: pipeline (model loading included)",
    "current_pipeline_s": "current: pipeline (model loading included)",
    "checks_s": "drift checks (domain classifier included)",
}


def timing_rows(t: dict) -> list[tuple[str, str]]:
    """(phase, seconds or rows/s) rows of a run's timings."""
    rows = [(name, f"{t[k]:.2f} s") for k, name in TIMING_NAMES.items() if k in t]
    rows += [
        (k.replace("_", " "), f"{v:.2f} s")
        for k, v in t.items()
        if k not in TIMING_NAMES and k.endswith("_s") and not k.endswith("rows_per_s")
    ]
    if "rows_per_s" in t:
        rows.append(("throughput (whole pipeline)", f"{t['rows_per_s']:.0f} rows/s"))
    if "steady_rows_per_s" in t:
        rows.append(("throughput (once the first model was loaded)", f"{t['steady_rows_per_s']:.0f} rows/s"))
    return rows


def render_comparison(result: dict, ma: dict, mb: dict) -> str:
    """Side-by-side HTML of two evaluations: metric differences, both confusion matrices."""
    if ma.get("task") == "segmentation":  # per-class IoU and the pixel confusion matrices
        from cluster.report.segmentation import comparison_context

        return (
            environment()
            .get_template("compare_segmentation.html.j2")
            .render(**comparison_context(result, ma, mb))
        )
    return (
        environment()
        .get_template("compare.html.j2")
        .render(
            r=result,
            ma=ma,
            mb=mb,
            display={k: v.display for k, v in METRICS.items()},
            fig_a=Markup(figures.confusion(ma, "A: confusion matrix")),
            fig_b=Markup(figures.confusion(mb, "B: confusion matrix")),
        )
    )


def render_drift(d: dict, svgs: dict[str, str]) -> str:
    """The drift report of jobs/drift.py's result ``d``; ``svgs``: name -> ``<svg>``
    (cluster/report/figures.py)."""
    template = environment().get_template("drift.html.j2")
    fig = {name: Markup(svg) for name, svg in svgs.items()}
    return template.render(d=d, fig=fig, timings=timing_rows(d["timings"]))
