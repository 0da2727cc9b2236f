"""What a segmentation evaluation's report.html shows (cluster/report/templates/segmentation.html.j2).

The scores with their bootstrap intervals over images, per-class IoU / Dice / accuracy (a table
and a bar chart), the pixel confusion matrix (each true class's pixels, in percent, by predicted
class) and the worst images (lowest per-image IoU): the input as the model saw it, tinted by the
true mask, and by the predicted one (cluster/evaluation/segment.py renders them).
"""

from __future__ import annotations

from markupsafe import Markup

from cluster.report import svgplots
from cluster.stats.metrics import METRICS
from cluster.stats.segmentation import SCORES


def context(m: dict) -> dict:
    """The template's variables (besides lineage and timings, which html.render adds)."""
    ci = m.get("ci95") or {}
    rows = [{"display": METRICS[k].display, "value": m[k], "ci": ci.get(k)} for k in SCORES if k in m]
    rows.append({"display": "Mean per-image IoU", "value": m.get("mean_image_iou"), "ci": None})
    labels = list(m["per_class"])
    series = {
        name: [m["per_class"][lab][key] or 0.0 for lab in labels]
        for name, key in (("IoU", "iou"), ("Dice", "dice"))
    }
    return {
        "m": m,
        "metric_rows": rows,
        "fig": {
            "per_class": Markup(svgplots.grouped_bars(labels, series, "Per-class IoU and Dice")),
            "confusion": Markup(confusion_percent(m["confusion_matrix"], m["labels"])),
        },
        "worst": m.get("worst_images") or [],
    }


def confusion_percent(matrix: list[list[int]], labels: list[str]) -> str:
    """The pixel confusion matrix with each row (a true class) in whole percent of its pixels."""
    rows = []
    for row in matrix:
        total = sum(row)
        rows.append([round(100 * v / total) if total else 0 for v in row])
    return svgplots.confusion(rows, labels, "Pixels of each true class by predicted class (%)")


def comparison_context(result: dict, ma: dict, mb: dict) -> dict:
    """The variables of compare_segmentation.html.j2: B against A, per class and as confusion matrices."""
    per_class = []
    for lab in ma["labels"]:
        a, b = ma["per_class"][lab]["iou"], mb["per_class"].get(lab, {}).get("iou")
        per_class.append({"label": lab, "a": a, "b": b, "diff": None if a is None or b is None else b - a})
    return {
        "r": result,
        "per_class": per_class,
        "display": {k: v.display for k, v in METRICS.items()},
        "fig_a": Markup(confusion_percent(ma["confusion_matrix"], ma["labels"])),
        "fig_b": Markup(confusion_percent(mb["confusion_matrix"], mb["labels"])),
    }
