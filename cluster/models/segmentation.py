"""Semantic segmentation network: EfficientNet-Lite0 encoder (ImageNet or random) + a light decoder.

The encoder is the packaged ImageNet EfficientNet-Lite0 (cluster/models/vision.py loads the same
weights) without its classification head. The decoder is LR-ASPP's attention head (MobileNetV3:
a 1x1 conv of the stride-32 features gated by their global average) followed by a U-Net-style
top-down path: at strides 16, 8, 4 and 2 the decoded features are upsampled, added to a 1x1
projection of the encoder's features there, and refined by a depthwise-separable 3x3 conv; a 1x1
classifier at stride 2 gives per-class logits, upsampled bilinearly to the input size.
At 64 px: 3.07M parameters (0.11M of them the decoder's), 69 MFLOPs per image (torch's
FlopCounterMode), 1.16x the encoder's.

The model directory (read by the same resolve/load functions as every model):

  config.json        {"modality": "image", "task": "segmentation", "format_version": 1,
                      "architecture": "efficientnet-lite0", "decoder": "lraspp-unet",
                      "decoder_channels": [96, 96, 64, 48, 32], "num_labels": K,
                      "id2label": {"0": name, ...}, "label2id",
                      "drop_connect_rate": 0.2, "preprocessing": {...} (as an image classifier's)}
  model.safetensors  encoder ("net.*", efficientnet_lite_pytorch's names) + decoder ("decoder.*")
  evalcluster.json   lineage (base_model, init, weights + sha256, seed, sweep, ...)

This module imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from cluster.data.images import IMAGE_SIZE, Preprocessing
from cluster.errors import UserError
from cluster.models.modeldir import (
    WEIGHTS_ORIGIN,
    load_safetensors_into,
    read_config_json,
    read_lineage,
    safetensors_files,
    write_model_dir,
)
from cluster.models.vision import (
    ARCHITECTURE,
    ORIGIN_KEYS,
    load_pretrained_state,
)

FORMAT_VERSION = 1
DECODER = "lraspp-unet"
DECODER_CHANNELS = (96, 96, 64, 48, 32)  # at strides 32 (LR-ASPP), 16, 8, 4, 2
MAX_CLASSES = 255  # masks are 8-bit label maps and 255 marks an unlabelled pixel (cluster/data/masks.py)
UNUSED_ENCODER = ("_conv_head", "_bn1", "_fc")  # the classifier's 1280-channel head: not used here


@dataclass
class SegmentationConfig:
    """What config.json of a segmentation model directory holds."""

    labels: list[str]  # class names, index = mask value
    preprocessing: Preprocessing
    decoder_channels: tuple[int, ...] = DECODER_CHANNELS
    drop_connect_rate: float = 0.2  # EfficientNet-Lite0's stochastic depth

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict:
        return {
            "modality": "image",
            "task": "segmentation",
            "format_version": FORMAT_VERSION,
            "architecture": ARCHITECTURE,
            "decoder": DECODER,
            "decoder_channels": list(self.decoder_channels),
            "num_labels": self.num_labels,
            "id2label": {str(i): lab for i, lab in enumerate(self.labels)},
            "label2id": {lab: i for i, lab in enumerate(self.labels)},
            "drop_connect_rate": self.drop_connect_rate,
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_json(cls, cfg: dict, where: str) -> SegmentationConfig:
        """Validate a config.json; every problem is a UserError naming ``where``."""
        if cfg.get("task") != "segmentation" or cfg.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{where}: not a segmentation model config (task segmentation, format_version 1)")
        if cfg.get("architecture") != ARCHITECTURE or cfg.get("decoder") != DECODER:
            raise UserError(
                f"{where}: architecture {cfg.get('architecture')!r} / decoder {cfg.get('decoder')!r}; "
                f"supported: {ARCHITECTURE} / {DECODER}"
            )
        id2label = cfg.get("id2label") or {}
        labels = [id2label.get(str(i)) for i in range(len(id2label))]
        if not 2 <= len(labels) <= MAX_CLASSES or None in labels or len(set(labels)) != len(labels):
            raise UserError(
                f'{where}: id2label must map "0".."K-1" to K distinct class names, 2 <= K <= {MAX_CLASSES}'
            )
        if cfg.get("label2id") != {lab: i for i, lab in enumerate(labels)}:
            raise UserError(f"{where}: label2id does not invert id2label")
        channels = cfg.get("decoder_channels")
        if not (
            isinstance(channels, list)
            and len(channels) == 5
            and all(isinstance(c, int) and c > 0 for c in channels)
        ):
            raise UserError(f"{where}: decoder_channels must be 5 positive integers")
        prep = Preprocessing.from_dict(cfg.get("preprocessing") or {}, f"{where} preprocessing")
        return cls(labels, prep, tuple(channels), float(cfg.get("drop_connect_rate", 0.2)))


# ------------------------------------------------------------------ the network


def _conv_bn(cin: int, cout: int, kernel: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class Up(nn.Module):
    """One top-down step: upsample, add the encoder's projected features, refine (depthwise 3x3 + 1x1)."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.reduce = _conv_bn(cin, cout, relu=False) if cin != cout else nn.Identity()
        self.lateral = _conv_bn(cskip, cout, relu=False)
        self.refine = nn.Sequential(_conv_bn(cout, cout, 3, groups=cout), _conv_bn(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(x + self.lateral(skip))


class Decoder(nn.Module):
    """LR-ASPP head on the stride-32 features, then ``Up`` steps to stride 2, then the classifier."""

    def __init__(self, skip_channels: Sequence[int], channels: Sequence[int], num_labels: int):
        super().__init__()
        *skips, deepest = skip_channels  # strides 2, 4, 8, 16; 32
        self.aspp = _conv_bn(deepest, channels[0])
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(deepest, channels[0], 1), nn.Sigmoid())
        ups, cin = [], channels[0]
        for cskip, cout in zip(reversed(skips), channels[1:], strict=True):
            ups.append(Up(cin, cskip, cout))
            cin = cout
        self.ups = nn.ModuleList(ups)
        self.classifier = nn.Conv2d(cin, num_labels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        *skips, deepest = features
        x = self.aspp(deepest) * self.gate(deepest)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        return self.classifier(x)


class SegmentationOutput(NamedTuple):
    logits: torch.Tensor  # (n, num_labels, S, S)


class SegmentationModel(nn.Module):
    """``forward(pixel_values)`` -> ``.logits`` (n, K, S, S) at the input's size."""

    def __init__(self, config: SegmentationConfig, origin: dict | None = None):
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__()
        self.config = config
        self.origin = dict(origin or {})
        side = config.preprocessing.image_size
        self.net = EfficientNet.from_name(
            ARCHITECTURE, image_size=side, drop_connect_rate=config.drop_connect_rate
        )  # "same" padding fixed for this input side, as the classifier's
        for name in UNUSED_ENCODER:
            delattr(self.net, name)
        blocks = self.net._blocks
        # Features are taken where the resolution is about to halve, and at the end: strides 2..32.
        self.taps = [i for i in range(len(blocks)) if i == len(blocks) - 1 or _stride(blocks[i + 1]) == 2]
        skip_channels = [blocks[i]._block_args.output_filters for i in self.taps]
        self.decoder = Decoder(skip_channels, config.decoder_channels, config.num_labels)
        # What training treats as new (cluster/train/step.py: at decoder_lr_scale x the rate): a new decoder
        # learns much faster at 10x (32 images, 100 steps: train mIoU 0.86 against 0.43 at 1x).
        self.new_layers = ("decoder.",)
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> SegmentationModel:
        """channels_last by default: oneDNN's depthwise convolutions are faster in it on CPU
        (cluster/models/vision.py measured it for the same encoder)."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        net, n = self.net, len(self.net._blocks)
        x = net._swish(net._bn0(net._conv_stem(x)))
        out = []
        for i, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * i / n if rate else rate)  # as extract_features scales it
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, pixel_values: torch.Tensor) -> SegmentationOutput:
        """pixel_values: (n, 3, S, S) float, normalised (``cluster.data.images.normalize``)."""
        x = pixel_values.contiguous(memory_format=self.memory_format)
        logits = self.decoder(self.features(x))
        return SegmentationOutput(
            F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        )


def _stride(block) -> int:
    s = block._block_args.stride
    return int(s[0] if isinstance(s, list | tuple) else s)


# ------------------------------------------------------------------ building, saving, loading


def new_segmentation_model(
    labels: Sequence[str],
    *,
    pretrained: bool = True,
    image_size: int = IMAGE_SIZE,
    seed: int = 0,
) -> SegmentationModel:
    """A new segmentation model for ``labels`` (index = mask value): the ImageNet encoder
    (``pretrained``) or the same architecture randomly initialised throughout; the decoder is
    new and seeded either way (the global RNG is left as it was). Returned in eval mode."""
    labels = list(labels)
    if not 2 <= len(labels) <= MAX_CLASSES or len(set(labels)) != len(labels):
        raise UserError(f"segmentation needs 2 to {MAX_CLASSES} distinct classes, got {labels}")
    config = SegmentationConfig(labels, Preprocessing(image_size=image_size))
    origin = {"base_model": ARCHITECTURE, "init": "imagenet" if pretrained else "random", "seed": seed}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegmentationModel(config, origin)
    if pretrained:
        state, digest = load_pretrained_state()
        encoder = {k: v for k, v in state.items() if k.split(".")[0] not in UNUSED_ENCODER}
        result = model.net.load_state_dict(encoder, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise UserError(f"ImageNet weights do not fit the {ARCHITECTURE} encoder: {result}")
        model.origin.update(weights=WEIGHTS_ORIGIN, weights_sha256=digest)
    return model.eval()


def read_segmentation_config(path: str | Path) -> SegmentationConfig:
    return SegmentationConfig.from_json(*read_config_json(path))


def save_segmentation_model_dir(model: SegmentationModel, out: str | Path, lineage: dict) -> Path:
    """Write config.json + model.safetensors + evalcluster.json, appearing complete or not at all."""
    if getattr(model, "folded", False):
        raise ValueError("a model folded for inference (prepare_for_inference) cannot be saved")
    return write_model_dir(out, safetensors_files(model.config.to_json(), model), {**model.origin, **lineage})


def load_segmentation_model(path: str | Path, device: str = "cpu") -> SegmentationModel:
    """A segmentation model directory -> ``SegmentationModel`` in eval mode on ``device``."""
    path = Path(path)
    config = read_segmentation_config(path)
    lineage = read_lineage(path)
    model = SegmentationModel(config, {k: lineage[k] for k in ORIGIN_KEYS if k in lineage})
    load_safetensors_into(model, path, "segmentation weights")
    return model.to(device).eval()
