"""A segmentation sweep's training and validation splits, decoded and checked in the driver.

Every image and mask is read, decoded and checked (cluster/data/masks.py) before any trial starts,
so a bad pair is one line naming its row (exit 2) and not a failed trial; the splits then travel
to the trials through the object store already decoded (uint8 images at the model's input size,
masks resized to it by nearest neighbour, unlabelled pixels 255): a trial only normalises batches.
"""

from __future__ import annotations

import numpy as np

from cluster.data.images import Preprocessing
from cluster.data.masks import MaskRules, decode_pairs
from cluster.data.pairs import data_dir, pairs_fingerprint, read_pairs
from cluster.errors import UserError
from cluster.train.loop import Split


def load_segmentation_splits(spec, modality: str, model_path) -> tuple[Split, Split, list[str], str]:
    """(train, validation, classes, the training data's fingerprint) of a SweepSpec with task
    segmentation, at the input size of the model the trials start from (``model_path``)."""
    classes = list(spec.classes)
    prep = start_preprocessing(spec, modality, model_path)
    splits, fingerprint = [], None
    for data, cap in ((spec.train, spec.max_train_rows), (spec.validation, spec.max_validation_rows)):
        table = read_pairs(data.path, data.image_column, data.mask_column)
        fingerprint = fingerprint or pairs_fingerprint(table)
        table = _subsample(table, cap, spec.seed)
        d = decode_pairs(
            table["image"].to_pylist(),
            table["mask"].to_pylist(),
            prep,
            MaskRules(len(classes), data.ignore_index),
            rows=table["row"].to_pylist(),
            base_dir=data_dir(data.path),
            resize_masks=True,
        )
        splits.append(Split(d.pixels, np.stack(d.masks)))
    return splits[0], splits[1], classes, fingerprint


def start_preprocessing(spec, modality: str, model_path) -> Preprocessing:
    """The preprocessing of the model a segmentation trial starts from: a segmentation model
    directory's own, else a new model's at the spec's ``image_size``. Anything else is refused
    now, before any trial starts."""
    import json
    from pathlib import Path

    config = Path(model_path) / "config.json"
    task = json.loads(config.read_text()).get("task", "classification") if config.is_file() else None
    what = "a text model" if modality != "image" else f"a {task} model"
    if modality != "image" or task not in (None, "segmentation"):
        raise UserError(
            f"task segmentation fine-tunes efficientnet-lite0 or a segmentation model; {spec.model} is {what}"
        )
    if task is None:
        return Preprocessing(image_size=spec.image_size)
    from cluster.models.segmentation import read_segmentation_config

    have = read_segmentation_config(model_path)
    if have.labels != list(spec.classes):
        raise UserError(
            f"model {spec.model} segments {have.labels}, not the spec's classes {list(spec.classes)}"
        )
    return have.preprocessing


def _subsample(table, cap: int | None, seed: int):
    """At most ``cap`` rows, a seeded random subset kept in input order (there are no labels to
    stratify by)."""
    if cap is None or cap >= table.num_rows:
        return table
    keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, cap, replace=False))
    return table.take(keep)
