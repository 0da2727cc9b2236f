"""The reports' figures (matplotlib, rendered to PNG data URIs): one function per figure.

Each takes a metrics.json-style dict (or a section of one) and returns a ``data:image/png``
URI, so a report stays one self-contained file.
"""

from __future__ import annotations

import base64
import io

import numpy as np

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(size=(5, 4)):
    import matplotlib

    matplotlib.use("Agg")  # no display: render to PNG
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=100)


def to_uri(fig) -> str:
    """The figure as a PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def confusion(m: dict) -> str:
    fig, ax = _figure()
    cm = np.array(m["confusion_matrix"])
    labels = m["labels"]
    ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix",
    )
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    return to_uri(fig)


def reliability(m: dict) -> str:
    fig, ax = _figure()
    cal = m["calibration"]
    count = np.array(cal["bin_count"])
    nb = len(count)
    centers = (np.arange(nb) + 0.5) / nb
    used = count > 0
    acc = np.array(cal["bin_accuracy"])[used]
    ax.bar(centers[used], acc, width=1 / nb, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title(f"Reliability diagram (ECE {m['ece']:.3f})")
    ax.legend(loc="upper left")
    return to_uri(fig)


def per_class(m: dict) -> str:
    fig, ax = _figure()
    labels = list(m["per_class"])
    x = np.arange(len(labels))
    for i, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, [m["per_class"][lab][key] for lab in labels], width=0.27, label=key)
    ax.set(xticks=x, xticklabels=labels, ylim=(0, 1), title="Per-class scores")
    ax.legend()
    return to_uri(fig)


def roc_curves(threshold: dict) -> str:
    """One-vs-rest ROC curve of each class, AUC in the legend."""
    fig, ax = _figure()
    for i, (lab, c) in enumerate(threshold["curves"].items()):
        auc = threshold["per_class"][lab].get("roc_auc")
        fpr, tpr = _xy(c["roc"]["fpr"], c["roc"]["tpr"])
        if len(fpr):
            ax.plot(fpr, tpr, color=COLORS[i % len(COLORS)], label=f"{lab} (AUC {_num(auc)})")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title("ROC curves (one vs rest)")
    ax.legend(loc="lower right", fontsize=8)
    return to_uri(fig)


def pr_curves(threshold: dict) -> str:
    """Precision-recall curve of each class, average precision in the legend."""
    fig, ax = _figure()
    for i, (lab, c) in enumerate(threshold["curves"].items()):
        ap = threshold["per_class"][lab].get("average_precision")
        recall, precision = _xy(c["pr"]["recall"], c["pr"]["precision"])
        if len(recall):
            ax.step(
                recall, precision, where="post", color=COLORS[i % len(COLORS)], label=f"{lab} (AP {_num(ap)})"
            )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
    ax.set_title("Precision-recall curves")
    ax.legend(loc="lower left", fontsize=8)
    return to_uri(fig)


def weak_slices(auto: dict, top: int = 15) -> str:
    """The lowest-scoring tested slices with their corrected intervals, against the overall score."""
    metric = auto["metric"]
    rows = sorted(auto["slices"].items(), key=lambda kv: kv[1][metric])[:top]
    fig, ax = _figure((7, 0.35 * max(len(rows), 3) + 1.2))
    names = [n for n, _ in rows][::-1]
    vals = np.array([s[metric] for _, s in rows][::-1])
    lo = np.array([s["ci_corrected"][0] for _, s in rows][::-1])
    hi = np.array([s["ci_corrected"][1] for _, s in rows][::-1])
    weak = {w["slice"] for w in auto["weak"]}
    colors = ["#d62728" if n in weak else "#1f77b4" for n in names]
    y = np.arange(len(names))
    ax.errorbar(vals, y, xerr=[vals - lo, hi - vals], fmt="none", ecolor="#555", capsize=3)
    ax.scatter(vals, y, c=colors, zorder=3)
    ax.axvline(auto["overall"], color="k", ls="--", lw=1, label=f"overall {auto['overall']:.3f}")
    ax.set(yticks=y, yticklabels=names, xlabel=f"{metric} (Bonferroni-corrected interval)")
    ax.set_title(f"Lowest {len(names)} of {auto['tested']} tested slices (red: weak)")
    ax.legend(loc="lower right", fontsize=8)
    return to_uri(fig)


def robustness(rob: dict, metric: str = "f1_macro") -> str:
    """Change of ``metric`` under each perturbation (perturbed - clean), paired 95% CIs, in points."""
    kinds = list(rob["perturbations"])
    d = [rob["perturbations"][k]["metrics"][metric] for k in kinds]
    diff = np.array([x["diff"] for x in d]) * 100
    ci = np.array([x["ci95"] or [x["diff"], x["diff"]] for x in d]) * 100
    fig, ax = _figure((6, 0.45 * max(len(kinds), 3) + 1.2))
    y = np.arange(len(kinds))
    ax.barh(y, diff, color=["#d62728" if v < 0 else "#2ca02c" for v in diff], alpha=0.8)
    ax.errorbar(diff, y, xerr=[diff - ci[:, 0], ci[:, 1] - diff], fmt="none", ecolor="k", capsize=3)
    ax.axvline(0, color="k", lw=1)
    ax.set(yticks=y, yticklabels=kinds, xlabel=f"{metric}: perturbed - clean (points, paired 95% CI)")
    ax.set_title(f"Robustness at rate {rob['rate']}")
    return to_uri(fig)


def histograms(series: dict[str, np.ndarray], *, bins, title: str, xlabel: str) -> str:
    """Overlaid normalised histograms of a few named samples (drift: reference vs current)."""
    fig, ax = _figure()
    for i, (name, values) in enumerate(series.items()):
        if len(values):
            ax.hist(values, bins=bins, density=True, alpha=0.5, color=COLORS[i % len(COLORS)], label=name)
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend()
    return to_uri(fig)


def shares(labels: list[str], series: dict[str, list[float]], title: str) -> str:
    """Side-by-side bars of class shares (drift: predicted classes)."""
    fig, ax = _figure()
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width=width, label=name, color=COLORS[i])
    ax.set(xticks=x, xticklabels=labels, ylim=(0, 1), ylabel="share of rows", title=title)
    ax.legend()
    return to_uri(fig)


def _xy(x: list, y: list) -> tuple[np.ndarray, np.ndarray]:
    """Curve points with both coordinates defined (a class without positives has none)."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    return (
        (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
        if pts
        else (np.array([]), np.array([]))
    )


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
