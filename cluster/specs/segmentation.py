"""What a sweep spec says about segmentation: its classes, and the checks that tie task, classes and metric.

    task: segmentation
    classes: [background, bear, bird, ...]   # mask value 0, 1, 2, ...; or --classes background,bear,...
    metric: miou                             # the default for task segmentation

A segmentation metric is one of cluster/stats/segmentation.py's SCORES; a classification sweep cannot
rank by one, nor a segmentation sweep by a classification metric.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from cluster.stats.segmentation import SCORES

MAX_CLASSES = 255  # 8-bit masks, 255 = unlabelled (cluster/data/masks.py)


def _split(value: Any) -> Any:
    """ "background,cat,dog" (an option) -> a list; a YAML list stays as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return value


def _distinct(names: list[str]) -> list[str]:
    if not 2 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"needs 2 to {MAX_CLASSES} class names (mask values 0..K-1), got {len(names)}")
    if any(not n for n in names):
        raise ValueError("a class name is empty")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"class names must be distinct; repeated: {', '.join(twice)}")
    return names


Classes = Annotated[list[str], BeforeValidator(_split), AfterValidator(_distinct)]


def default_metric(data: Any) -> Any:
    """Before validation: a segmentation sweep that names no metric ranks by miou."""
    if isinstance(data, dict) and data.get("task") == "segmentation" and data.get("metric") is None:
        return {**data, "metric": "miou"}
    return data


def check_task(spec) -> None:
    """Raise ValueError when a SweepSpec's task, classes, metric and data disagree."""
    if spec.task != "segmentation":
        if spec.classes is not None:
            raise ValueError(f"classes is for task segmentation (mask values); task is {spec.task}")
        if spec.metric in SCORES:
            raise ValueError(f"metric {spec.metric} is a segmentation metric; task is {spec.task}")
        return
    if spec.classes is None:
        raise ValueError("task segmentation needs classes: the class name of each mask value 0, 1, ...")
    if spec.metric not in SCORES:
        raise ValueError(f"task segmentation ranks by {', '.join(SCORES)}, not {spec.metric}")
    for name in ("train", "validation"):
        ignore = getattr(spec, name).ignore_index
        if ignore < len(spec.classes):
            raise ValueError(
                f"{name}.ignore_index {ignore} is the mask value of class {spec.classes[ignore]!r}; "
                f"an unlabelled pixel needs a value from {len(spec.classes)} to 255 (default 255)"
            )
