"""Which task evaluates a model: the task seam's registry (cluster/evaluation/task.py).

A model directory says its task in config.json (``"task"``, cluster/models/modality.py
``model_task``; absent = classification, or translation for a Hugging Face encoder-decoder):
classification (cluster/evaluation/classify.py), segmentation (cluster/evaluation/segment.py) or
translation (cluster/evaluation/translate.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from cluster.data.files import input_column
from cluster.data.images import Preprocessing
from cluster.errors import UserError
from cluster.evaluation.classify import ClassifyTask
from cluster.evaluation.classify_columns import ID, IMAGE, LABEL, SLICE, TEXT
from cluster.evaluation.segment import segment_task
from cluster.evaluation.task import EvalTask
from cluster.evaluation.translate import TranslateTask
from cluster.specs.workloads import DataSpec, PipelineSpec


def task_for(spec: PipelineSpec, model, labels: list[str] | None, data: DataSpec, analyses=None) -> EvalTask:
    """The evaluation task of ``model`` (a cluster.models.resolve.ModelRef) on ``data``."""
    from cluster.models.modality import model_task

    kind = model_task(model.path)
    if kind == "translation":
        return TranslateTask(model=model.source, data=data, spec=spec, run_token=uuid.uuid4().hex)
    if kind == "segmentation":
        return segment_task(spec, model, labels, data, run_token=uuid.uuid4().hex)
    if kind != "classification":
        raise UserError(
            f"model {model.model_id} is a {kind} model; this version evaluates classifiers, "
            "segmenters and translators"
        )
    return classification(spec, model, labels, data, analyses)


def columns_for(data: DataSpec, modality: str) -> dict[str, str]:
    """The classification pipeline's columns -> ``data``'s (the model's input, label, id, slice)."""
    columns = {TEXT if modality == "text" else IMAGE: input_column(data, modality)}
    for name, column in ((LABEL, data.label_column), (ID, data.id_column), (SLICE, data.slice_column)):
        if column:
            columns[name] = column
    return columns


def classification(spec: PipelineSpec, model, labels, data: DataSpec, analyses=None) -> ClassifyTask:
    modality = model.modality
    return ClassifyTask(
        model=model.source,
        modality=modality,
        labels=labels,
        columns=columns_for(data, modality),
        spec=spec,
        analyses=analyses,
        id_name=data.id_column,
        base_dir=data_base_dir(data.path) if modality == "image" else None,
        preprocessing=image_preprocessing(model.path) if modality == "image" else None,
        run_token=uuid.uuid4().hex,
    )


def image_preprocessing(path: str | Path) -> Preprocessing:
    """An image model directory's preprocessing, from its config.json (no torch needed)."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    return Preprocessing.from_dict(cfg.get("preprocessing") or {}, f"{path} preprocessing")


def data_base_dir(path: str) -> str | None:
    """Where relative image paths in a dataset are resolved: the data file's directory."""
    if "://" in path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_dir() else p.parent)
