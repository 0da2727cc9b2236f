"""The reports' figures, one function per figure, drawn as inline SVG (cluster/report/svgplots.py).

Each takes a metrics.json-style dict (or a section of one, or the drift checks' samples)
and returns one ``<svg>`` element, so a report stays one self-contained file.
"""

from __future__ import annotations

import numpy as np

from cluster.report import svgplots

RED, BLUE, GREEN = "#d62728", "#1f77b4", "#2ca02c"


def confusion(m: dict, title: str = "Confusion matrix") -> str:
    return svgplots.confusion(m["confusion_matrix"], m["labels"], title)


def reliability(m: dict) -> str:
    cal = m["calibration"]
    return svgplots.reliability(cal["bin_count"], cal["bin_accuracy"], m["ece"])


def per_class(m: dict) -> str:
    labels = list(m["per_class"])
    series = {key: [m["per_class"][lab][key] for lab in labels] for key in ("precision", "recall", "f1")}
    return svgplots.grouped_bars(labels, series, "Per-class scores")


def roc_curves(threshold: dict) -> str:
    """One-vs-rest ROC curve of each class, AUC in the legend."""
    series = _class_curves(threshold, "roc", ("fpr", "tpr"), "roc_auc", "AUC")
    return svgplots.curves(
        series,
        "ROC curves (one vs rest)",
        "false positive rate",
        "true positive rate",
        diagonal=True,
        legend="bottom-right",
    )


def pr_curves(threshold: dict) -> str:
    """Precision-recall curve of each class, average precision in the legend."""
    series = _class_curves(threshold, "pr", ("recall", "precision"), "average_precision", "AP")
    return svgplots.curves(
        series, "Precision-recall curves", "recall", "precision", step=True, legend="bottom-left"
    )


def _class_curves(threshold: dict, curve: str, axes: tuple[str, str], score: str, short: str) -> dict:
    """{"<class> (<short> <score>)": (xs, ys)} for the classes whose ``curve`` has points."""
    series = {}
    for lab, c in threshold["curves"].items():
        xy = _xy(c[curve][axes[0]], c[curve][axes[1]])
        if xy[0]:
            series[f"{lab} ({short} {_num(threshold['per_class'][lab].get(score))})"] = xy
    return series


def weak_slices(auto: dict, top: int = 15) -> str:
    """The lowest-scoring tested slices with their corrected intervals, against the overall score."""
    metric = auto["metric"]
    weak = {w["slice"] for w in auto["weak"]}
    rows = sorted(auto["slices"].items(), key=lambda kv: kv[1][metric])[:top]
    shown = [
        (name, s[metric], s["ci_corrected"][0], s["ci_corrected"][1], RED if name in weak else BLUE)
        for name, s in rows
    ]
    return svgplots.intervals(
        shown,
        f"Lowest {len(shown)} of {auto['tested']} tested slices (red: weak)",
        f"{metric} (Bonferroni-corrected interval; dashed: overall {auto['overall']:.3f})",
        ref=auto["overall"],
        bars=False,
    )


def robustness(rob: dict, metric: str = "f1_macro") -> str:
    """Change of ``metric`` under each perturbation (perturbed - clean), paired 95% CIs, in points."""
    shown = []
    for kind, p in rob["perturbations"].items():
        d = p["metrics"][metric]
        lo, hi = d["ci95"] or (d["diff"], d["diff"])
        shown.append((kind, d["diff"] * 100, lo * 100, hi * 100, RED if d["diff"] < 0 else GREEN))
    return svgplots.intervals(
        shown,
        f"Robustness at rate {rob['rate']}",
        f"{metric}: perturbed - clean (points, paired 95% CI)",
        ref=0.0,
        bars=True,
    )


def histograms(series: dict[str, np.ndarray], *, bins, title: str, xlabel: str) -> str:
    """Normalised histograms of a few named samples as step curves (drift: reference vs current)."""
    bins = np.asarray(bins, dtype=float)
    found = {}
    for name, values in series.items():
        if len(values):
            density, edges = np.histogram(values, bins=bins, density=True)
            found[name] = (edges.tolist(), [*density.tolist(), float(density[-1])])
    ymax = max((max(ys) for _, ys in found.values()), default=1.0) * 1.1 or 1.0
    return svgplots.curves(found, title, xlabel, "density", step=True, xmax=float(bins[-1]), ymax=ymax)


def shares(labels: list[str], series: dict[str, list[float]], title: str) -> str:
    """Side-by-side bars of class shares (drift: predicted classes)."""
    return svgplots.grouped_bars(labels, series, title)


INIT_COLORS = {"pretrained": BLUE, "random": RED}  # the sweep report's learning curves


def learning_curves(summaries: list[dict], metric: str) -> str:
    """Validation ``metric`` by trial-epoch, one line per trial of each sweep, coloured by init
    (pretrained blue, random red): whether pretraining converges faster and ends better.
    ``summaries``: jobs/sweep.py summaries, each with ``init`` and ``curves``."""
    series, colors, inits = {}, [], {}
    for s in summaries:
        init = s.get("init", "pretrained")
        color = INIT_COLORS.get(init, GREEN)
        inits.setdefault(f"init: {init}", color)
        for c in s.get("curves", []):
            series[f"{s.get('run_id', '')} {c['trial_id']}"] = (c["epoch"], c[metric])
            colors.append(color)
    xmax = max((max(xs, default=0.0) for xs, _ in series.values()), default=0.0) or 1.0
    ymax = max((max(ys, default=0.0) for _, ys in series.values()), default=0.0)
    return svgplots.curves(
        series,
        "Learning curves",
        "trial-epoch",
        f"validation {metric}",
        xmax=float(xmax),
        ymax=1.0 if ymax <= 1.0 else float(ymax) * 1.05,  # scores in [0, 1]; a loss may exceed 1
        colors=colors,
        legend="top-left",  # early high scores are rare; chance-level runs stay along the bottom
        legend_items=list(inits.items()),
        markers=True,
    )


def _xy(x: list, y: list) -> tuple[list[float], list[float]]:
    """Curve points with both coordinates defined (a class without positives has none)."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
