"""One self-contained HTML report of an evaluation (plots inline as SVG: cluster/svgplots.py)."""

from __future__ import annotations

import html
from pathlib import Path

from cluster import svgplots
from cluster.metrics import METRICS, metric_names

HEADLINE = metric_names(headline=True)

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.plots svg{width:47%;height:auto;margin:1%}
.meta{color:#555;font-size:.9em}"""


def write_report(metrics: dict, path: str | Path) -> Path:
    """Write report.html for a metrics.json dict; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(metrics))
    tmp.replace(path)
    return path


def render(m: dict) -> str:
    """The report as an HTML string."""
    model = m.get("model", {}).get("id", "?")
    data = m.get("dataset", {})
    parts = [
        f"<h1>Evaluation of {_e(model)}</h1>",
        f"<p class=meta>dataset {_e(data.get('path'))} (fingerprint {_e(data.get('fingerprint'))}), "
        f"{m['n']} rows, precision {_e(m.get('precision_mode'))}, run {_e(m.get('run_id'))}</p>",
        "<h2>Metrics</h2>",
        _metrics_table(m),
        "<h2>Per class</h2>",
        _per_class_table(m),
        "<div class=plots>",
        _confusion_plot(m),
        _reliability_plot(m),
        _per_class_plot(m),
        "</div>",
    ]
    if m.get("slices"):
        parts += ["<h2>Slices</h2>", _slices_table(m["slices"])]
    parts.append(f"<p class=meta>timings: {_e(m.get('timings'))}</p>")
    return (
        f"<!doctype html><meta charset=utf-8><title>evalcluster: {_e(model)}</title>"
        f"<style>{CSS}</style>" + "\n".join(parts)
    )


def _metrics_table(m: dict) -> str:
    ci = m.get("ci95", {})
    rows = "".join(
        f"<tr><td>{METRICS[k].display}</td><td>{m[k]:.4f}</td><td>{_ci(ci.get(k))}</td></tr>"
        for k in HEADLINE
        if k in m
    )
    return f"<table><tr><th>metric</th><th>value</th><th>95% CI (bootstrap)</th></tr>{rows}</table>"


def _per_class_table(m: dict) -> str:
    rows = "".join(
        f"<tr><td>{_e(lab)}</td><td>{v['precision']:.4f}</td><td>{v['recall']:.4f}</td>"
        f"<td>{v['f1']:.4f}</td><td>{v['support']}</td></tr>"
        for lab, v in m["per_class"].items()
    )
    return (
        "<table><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th><th>support</th></tr>"
        f"{rows}</table>"
    )


def _slices_table(s: dict) -> str:
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{v['n']}</td><td>{v['accuracy']:.4f}</td><td>{v['f1_macro']:.4f}</td></tr>"
        for k, v in s["slices"].items()
    )
    gap = "".join(
        f"<li>{_e(metric)}: best {_e(g['best'])}, worst {_e(g['worst'])}, gap {g['gap']:.4f}</li>"
        for metric, g in s["gap"].items()
    )
    return (
        f"<table><tr><th>slice</th><th>n</th><th>accuracy</th><th>f1_macro</th></tr>{rows}</table>"
        f"<ul>{gap}</ul>"
    )


def _ci(pair) -> str:
    return f"[{pair[0]:.4f}, {pair[1]:.4f}]" if pair else "-"


def _e(x) -> str:
    return html.escape(str(x))


# ------------------------------------------------------------------ plots (cluster/svgplots.py)


def _confusion_plot(m: dict, title: str = "Confusion matrix") -> str:
    return svgplots.confusion(m["confusion_matrix"], m["labels"], title)


def _reliability_plot(m: dict) -> str:
    cal = m["calibration"]
    return svgplots.reliability(cal["bin_count"], cal["bin_accuracy"], m["ece"])


def _per_class_plot(m: dict) -> str:
    labels = list(m["per_class"])
    series = {key: [m["per_class"][lab][key] for lab in labels] for key in ("precision", "recall", "f1")}
    return svgplots.grouped_bars(labels, series, "Per-class scores")


def render_comparison(result: dict, ma: dict, mb: dict) -> str:
    """Side-by-side HTML of two evaluations: metric differences, both confusion matrices."""
    rows = "".join(
        f"<tr><td>{METRICS[k].display if k in METRICS else _e(k)}</td><td>{d['a']:.4f}</td>"
        f"<td>{d['b']:.4f}</td><td>{d['diff']:+.4f}</td>"
        f"<td>{_ci(d['ci95'])}</td></tr>"
        for k, d in result["metrics"].items()
    )
    per = "".join(
        f"<tr><td>{_e(lab)}</td><td>{ma['per_class'][lab]['f1']:.4f}</td><td>{mb['per_class'][lab]['f1']:.4f}</td>"
        f"<td>{mb['per_class'][lab]['f1'] - ma['per_class'][lab]['f1']:+.4f}</td></tr>"
        for lab in ma["labels"]
    )
    mc = result["mcnemar"]
    return (
        f"<!doctype html><meta charset=utf-8><title>compare {_e(result['a'])} vs {_e(result['b'])}</title>"
        f"<style>{CSS}</style><h1>{_e(result['verdict'])}</h1>"
        f"<p class=meta>A = {_e(result['a'])} (model {_e(result['model_a'])}), B = {_e(result['b'])} "
        f"(model {_e(result['model_b'])}), dataset {_e(result['dataset'])}, {result['n']} rows</p>"
        "<table><tr><th>metric</th><th>A</th><th>B</th><th>B - A</th><th>paired 95% CI</th></tr>"
        f"{rows}</table><p>McNemar exact: A right / B wrong {mc['a_right_b_wrong']}, "
        f"A wrong / B right {mc['a_wrong_b_right']}, p = {mc['p_value']:.3g}</p>"
        "<h2>Per-class F1</h2><table><tr><th>class</th><th>A</th><th>B</th><th>B - A</th></tr>"
        f"{per}</table><div class=plots>{_confusion_plot(ma, 'A: confusion matrix')}"
        f"{_confusion_plot(mb, 'B: confusion matrix')}</div>"
    )
