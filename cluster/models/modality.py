"""The modality seam: where the text path tokenises, the image path decodes and preprocesses.

Everything else (the Predictor actor pool, sufficient statistics, bootstrap,
calibration, slices, report, registry, compare, gates, the Tune trainable, ASHA and
the training loop) is shared and calls only these few operations on a
:class:`Classifier`:

  prepare(values, rows)      raw column values -> model-ready inputs (texts as they are;
                              images decoded to uint8 (n, 3, S, S)), with the bad rows
  encode(inputs, idx)        one training batch -> keyword arguments of the model
  logits(batch)              forward pass -> (n, num_labels) logits
  predict_proba(inputs)      probabilities (n, num_labels) float64 in input order
  save / save_checkpoint     a model directory / a trial checkpoint (safetensors)

A model directory's modality is in its config.json (``"modality": "image"``); a
config.json without it is a Hugging Face text model, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cluster.data.images import IMAGE_SIZE
from cluster.errors import UserError
from cluster.models.modeldir import pretrained_weights_path

Modality = Literal["text", "image"]
MODALITIES = ("text", "image")
INPUT_FIELDS = {"text": "texts", "image": "images"}  # the request field of each modality (serve)
Init = Literal["pretrained", "random"]
# What a model does with its input. A model directory says it in config.json (``"task"``); one that
# does not is a classifier (every model directory written before tasks existed).
Task = Literal["classification", "segmentation", "translation"]
TASKS = ("classification", "segmentation", "translation")


def model_modality(path: str | Path) -> Modality:
    """ "image" for an image model directory, "text" for any other (Hugging Face) one."""
    f = Path(path) / "config.json"
    if not f.is_file():
        return "image" if is_image_base(path) else "text"
    cfg = json.loads(f.read_text())
    return "image" if cfg.get("modality") == "image" else "text"


def model_task(path: str | Path) -> Task:
    """The task of a model directory: its config.json's ``"task"``, else translation for a Hugging
    Face encoder-decoder (Marian, T5, BART: ``is_encoder_decoder``), else classification."""
    f = Path(path) / "config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    task = cfg.get("task")
    if task is None:
        return "translation" if cfg.get("is_encoder_decoder") else "classification"
    if task not in TASKS:
        raise UserError(f'{f}: "task" is {task!r}; allowed: {", ".join(TASKS)}')
    return task


def is_image_base(path: str | Path) -> bool:
    """The bundled ImageNet weights' directory (the base of a new image classifier)."""
    try:
        return Path(path).resolve() == pretrained_weights_path().parent.resolve()
    except UserError:
        return False


@dataclass
class Prepared:
    """Inputs ready for a model, and the rows that could not be prepared (skipped images)."""

    inputs: Any  # list[str] (text) or uint8 array (n, 3, S, S) (image)
    kept: np.ndarray  # positions in the given values that were kept, ascending
    bad: list = field(default_factory=list)  # cluster.data.images.BadRow


@dataclass
class Classifier:
    """A loaded classifier of either modality: the model, its labels, and (text) its tokenizer."""

    modality: Modality
    model: Any  # torch.nn.Module; forward(**encode(...)).logits
    labels: list[str]
    tokenizer: Any = None  # text only
    task: Task = "classification"  # what the model does (a Segmenter, cluster/models/segmenter.py, segments)

    # -------------------------------------------------------------- inputs

    def prepare(self, values: list, rows=None, *, skip_bad_rows: bool = False, base_dir=None) -> Prepared:
        """Column values -> inputs. Texts pass as they are; images are decoded (bad ones raise a
        UserError naming the row, or with ``skip_bad_rows`` are left out and listed)."""
        if self.modality == "text":
            return Prepared(list(values), np.arange(len(values)))
        from cluster.data.images import decode_images

        d = decode_images(
            values, self.model.config.preprocessing, rows=rows, skip_bad_rows=skip_bad_rows, base_dir=base_dir
        )
        return Prepared(d.pixels, d.kept, d.bad)

    def lengths(self, inputs) -> np.ndarray:
        """(n,) sizes for length-grouped batches: characters of a text; images are all alike."""
        return np.array([len(t) for t in inputs]) if self.modality == "text" else np.zeros(len(inputs))

    def encode(self, inputs, idx, *, max_length: int = 128) -> dict:
        """The training batch ``inputs[idx]`` as keyword arguments of the model, on its device."""
        device = next(self.model.parameters()).device
        if self.modality == "text":
            texts = [inputs[j] for j in idx]
            enc = self.tokenizer(
                texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            return dict(enc.to(device))
        from cluster.data.images import normalize

        return {"pixel_values": normalize(inputs[idx], self.model.config.preprocessing).to(device)}

    def logits(self, batch: dict):
        return self.model(**batch).logits

    def predict_proba(
        self, inputs, *, precision: str = "fp32", batch_size: int = 64, max_length: int = 128, groups=None
    ):
        """Probabilities (n, num_labels) float64 in input order. ``groups``: texts are batched within
        their group only (cluster/models/text.py ``predict_proba``); images are all one size."""
        if self.modality == "text":
            from cluster.models.text import predict_proba

            return predict_proba(
                self.model,
                self.tokenizer,
                inputs,
                max_length=max_length,
                precision=precision,
                batch_size=batch_size,
                groups=groups,
            )
        from cluster.models.vision import predict_proba_pixels

        return predict_proba_pixels(self.model, inputs, batch_size=batch_size, precision=precision)

    # -------------------------------------------------------------- saving

    def save(self, out: str | Path, lineage: dict) -> Path:
        """A model directory, written atomically (safetensors + config + evalcluster.json)."""
        if self.modality == "text":
            from cluster.models.text import save_model_dir

            return save_model_dir(self.model, self.tokenizer, out, lineage)
        from cluster.models.vision import save_image_model_dir

        return save_image_model_dir(self.model, out, lineage)


def refuse_text_analyses(spec, modality: str, model_id: str) -> None:
    """Analyses that read text (perturbations, weak slices by text features), asked of an image
    model: one line, before anything starts. ``spec``: an EvaluateSpec or RobustnessSpec."""
    if modality == "text":
        return
    if getattr(spec, "perturb", None):
        raise UserError(
            f"robustness perturbs text (typos, case, punctuation, ...); model {model_id} "
            "is an image classifier: evaluate it with `evalctl evaluate`"
        )
    if spec.auto_slices:
        raise UserError(
            f"--auto-slices finds weak slices by text features (length, words, URLs); model "
            f"{model_id} is an image classifier: use --slice-column for per-slice metrics"
        )


# ------------------------------------------------------------------ loading


def load_trained(path: str | Path, device: str = "cpu") -> Classifier:
    """A fine-tuned classifier directory of either modality (labels from its config); a segmentation
    model directory as a Segmenter (cluster/models/segmenter.py: the same operations)."""
    if model_task(path) == "segmentation":
        from cluster.models.segmenter import load_segmenter

        return load_segmenter(path, device=device)
    if model_modality(path) == "image":
        from cluster.models.vision import load_image_model

        model = load_image_model(path, device=device)
        return Classifier("image", model, list(model.config.labels))
    from cluster.models.text import load_classifier

    model, tokenizer, labels = load_classifier(path, device=device)
    return Classifier("text", model, labels, tokenizer)


def load_for_training(
    path: str | Path,
    labels: list[str],
    *,
    seed: int = 0,
    device: str = "cpu",
    init: Init = "pretrained",
    image_size: int = IMAGE_SIZE,
    task: Task = "classification",
) -> Classifier:
    """The model a trial starts from: ``path``'s weights with a new seeded head for ``labels``
    (a directory that already classifies ``labels`` keeps its head), or with ``init: random``
    the same architecture randomly initialised throughout (the pretrained-vs-random baseline).
    ``task`` segmentation (or a segmentation model directory): a Segmenter (``labels``: its classes)."""
    if task != "segmentation" and model_task(path) == "segmentation":
        raise UserError(f"model {path} is a segmentation model: fine-tune it with task: segmentation")
    if task == "segmentation":
        from cluster.models.segmenter import segmenter_for_training

        start = dict(seed=seed, device=device, init=init, image_size=image_size)
        return segmenter_for_training(path, labels, **start)
    if model_modality(path) == "image":
        return _image_for_training(Path(path), labels, seed, device, init, image_size)
    from cluster.models.text import load_classifier

    model, tokenizer, labels = load_classifier(path, labels=labels, seed=seed, device=device)
    if init == "random":
        model = _text_random_init(model, seed).to(device)
    return Classifier("text", model, labels, tokenizer)


def _image_for_training(path: Path, labels, seed: int, device: str, init: str, image_size: int) -> Classifier:
    from cluster.models.vision import load_image_model, new_image_classifier

    if (path / "config.json").is_file() and init == "pretrained":
        model = load_image_model(path, device=device)
        if list(model.config.labels) != list(labels):
            raise UserError(f"image model {path} predicts {model.config.labels}, not {list(labels)}")
    else:
        model = new_image_classifier(
            labels, pretrained=init == "pretrained", image_size=image_size, seed=seed
        )
    return Classifier("image", model.to(device), list(labels))


def _text_random_init(model, seed: int):
    """The same architecture and config, every weight drawn afresh (seeded)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForSequenceClassification.from_config(model.config)
    return fresh.eval()


# ------------------------------------------------------------------ trial checkpoints


def save_checkpoint(clf: Classifier, d: Path) -> None:
    """The model part of a trial checkpoint: ``d/model``, a model directory without lineage."""
    if clf.modality == "text":
        clf.model.save_pretrained(d / "model", safe_serialization=True)
        clf.tokenizer.save_pretrained(d / "model")
    else:  # an image classifier or a Segmenter: its own model directory
        clf.save(d / "model", {})
