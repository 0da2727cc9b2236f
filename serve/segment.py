"""Segmentation requests of the scorer: ``POST /v1/segment {"images": [base64, ...]}``.

    -> {"model": {"id", "labels"}, "segmentations": [{"width", "height", "mask_png", "shares"}]}

``mask_png`` is a base64 PNG label map at the image's own size (mode P: pixel value = class index;
its palette, PASCAL VOC's, colours the classes); ``shares`` is each class's share of the pixels.
The image limits are the classifier's (serve/images.py: count and bytes 413, pixels 422 from the
header, undecodable 422 naming ``images[i]``). Each image goes through the replica's batch queue
(``@serve.batch``), so images of concurrent requests share forward passes; the per-pixel
probabilities come back at the model's input size and are upsampled to the image's size exactly as
offline evaluation does (cluster/models/segmenter.py ``masks_at``).

:class:`SegmentRoutes` is mixed into serve/app.py's Scorer: Serve's ingress turns the methods of
the deployment class and its bases that carry routes into routes bound to the replica.
"""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from serve.images import request_bytes
from serve.schemas import ImageB64, ModelRef

segment_router = APIRouter()


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[ImageB64] = Field(..., min_length=1, description="Base64 PNG/JPEG images to segment.")


class Segmentation(BaseModel):
    width: int
    height: int
    mask_png: str = Field(
        ..., description="Base64 PNG label map at the image's size: pixel value = class index."
    )
    shares: dict[str, float] = Field(..., description="Each class's share of the image's pixels.")


class SegmentResponse(BaseModel):
    model: ModelRef
    segmentations: list[Segmentation]


def decode_with_sizes(images: list[bytes], prep, max_pixels: int) -> tuple[list, list]:
    """Encoded images -> (uint8 (3, S, S) each, (width, height) each); a bad one is a 422 naming it."""
    from cluster.data.images import BadImage, open_image, to_array

    pixels, sizes = [], []
    for i, data in enumerate(images):
        try:
            img = open_image(data, max_pixels)
        except BadImage as exc:
            raise HTTPException(422, detail=f"images[{i}] {exc}") from exc
        pixels.append(to_array(img, prep))
        sizes.append(img.size)
    return pixels, sizes


def segmentation(probs, size: tuple[int, int], labels: list[str]) -> Segmentation:
    """One image's (K, S, S) probabilities -> its mask at ``size`` as a PNG, and the class shares."""
    from cluster.models.segmenter import masks_at
    from cluster.report.masks import class_shares, mask_png

    mask = masks_at(probs, size)
    png = base64.b64encode(mask_png(mask)).decode("ascii")
    return Segmentation(width=size[0], height=size[1], mask_png=png, shares=class_shares(mask, labels))


class SegmentRoutes:
    """The /v1/segment route of the Scorer (serve/app.py), which has ``clf``, ``spec``, ``labels``,
    ``_score`` (one input through the batch queue) and ``_ref``."""

    @segment_router.post("/v1/segment", response_model=SegmentResponse)
    async def segment(self, req: SegmentRequest) -> SegmentResponse:
        if self.clf.task != "segmentation":
            what = "texts" if self.clf.modality == "text" else "images"
            raise HTTPException(
                422, detail=f"this model classifies {what}: POST /v1/predict, not /v1/segment"
            )
        data = request_bytes(req.images, self.spec)
        prep, limit = self.clf.model.config.preprocessing, self.spec.max_image_pixels
        pixels, sizes = await asyncio.to_thread(decode_with_sizes, data, prep, limit)
        rows = await asyncio.gather(*(self._score(x) for x in pixels))
        out = await asyncio.to_thread(
            lambda: [segmentation(p, s, self.labels) for p, s in zip(rows, sizes, strict=True)]
        )
        return SegmentResponse(model=self._ref(), segmentations=out)
