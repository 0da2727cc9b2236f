"""The Python API: evaluate a model from a notebook or your own Ray program.

    from cluster.evaluation.api import evaluate

    result = evaluate("data/sample/test.parquet", "best", batch_size=32)
    result = evaluate(ray.data.read_parquet("s3://bucket/test/"), "m-2026...", text_column="tweet")
    result.metrics["f1_macro"], result.metrics["ci95"]["f1_macro"], result.predictions

The same evaluation as `evalctl evaluate` (cluster/evaluation/run.py), registered as a run, with
the same result: ``EvalResult(run_id, out, metrics, predictions)`` (docs/contracts.md, "Python
API"). ``data`` is a path or URI (Parquet/CSV/JSONL files, a directory, a glob, a label-folder
tree of images) or a ``ray.data.Dataset``; the options are EvaluateSpec's fields (``batch_size``,
``bootstrap``, ``limit``, ``out``, ``workers``, ``gate``, ...) and DataSpec's (``text_column``,
``image_column``, ``label_column``, ``id_column``, ``slice_column``; a segmentation model's
``mask_column``, ``ignore_index``), checked as the CLI checks them.
A Ray already initialised in the calling process is used as it is (and left running).

A dataset may carry ``row`` (unique non-negative integers, e.g. the rows' positions): the
predictions keep it, and the bootstrap weights hash it; without it the rows are numbered in the
dataset's order. Its run records an order-free hash of its rows' inputs and labels as the dataset
fingerprint (a path's fingerprint is defined in docs/contracts.md; the two are not comparable).
Resuming (`evalctl evaluate --resume`) is for runs on a path.
"""

from __future__ import annotations

import os

from cluster.evaluation.run import EvalResult, run_evaluate
from cluster.specs.parse import load_spec
from cluster.specs.workloads import DataSpec, EvaluateSpec, RobustnessSpec

DATASET = "ray.data.Dataset"  # what a run on a dataset records as its data path


def evaluate(data, model: str = "best", *, address: str | None = None, **options) -> EvalResult:
    """Evaluate ``model`` (a model directory, registered id, alias or URI) on ``data``; see the module
    docstring. With ``perturb=[...]`` it is a robustness run (evalctl robustness)."""
    data_options = {k: options.pop(k) for k in list(options) if k in DataSpec.model_fields and k != "path"}
    dataset = None
    if isinstance(data, (str, os.PathLike)):
        path = str(data)
    else:
        dataset, path = data, DATASET
    kind, cls = ("robustness", RobustnessSpec) if "perturb" in options else ("evaluate", EvaluateSpec)
    spec = load_spec(cls, {"model": model, "data": {"path": path, **data_options}, **options})
    return run_evaluate(spec, kind=kind, address=address, dataset=dataset)
