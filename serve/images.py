"""Image requests of the scorer: modality checks, base64 -> decoded pixels, saliency responses.

The request schema (serve/schemas.py) has checked that each image is base64; here
the replica applies the deployment's limits (count: 413, bytes: 413) and decodes
with the model's own preprocessing (cluster/data/images.py, as offline evaluation does):
bytes that are not an image, a zero-size image or a decompression bomb are a 422
naming the image. Nothing here runs the model but ``explain``, whose saliency map has at most
``max_explain_pixels`` pixels, whatever the image's size.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import HTTPException

from cluster.models.modality import INPUT_FIELDS
from cluster.specs.serve import ServeSpec

WHAT = {"text": "texts", "image": "images (base64 PNG/JPEG)"}


def require_modality(modality: str, sent: str, task: str = "classification") -> None:
    """422 naming the field this model takes when a request sent the other modality's; 422 naming
    /v1/segment when the model is a segmentation model (``task``)."""
    if task == "segmentation":
        raise HTTPException(422, detail='this model segments images: POST /v1/segment {"images": [...]}')
    if sent != modality:
        raise HTTPException(
            422,
            detail=f'this model classifies {modality}s: send "{INPUT_FIELDS[modality]}" '
            f'({WHAT[modality]}), not "{INPUT_FIELDS[sent]}"',
        )


def image_limits(spec: ServeSpec) -> dict:
    return {
        "max_images": spec.max_images,
        "max_image_bytes": spec.max_image_bytes,
        "max_explain_pixels": spec.max_explain_pixels,
    }


def request_bytes(images: list[str], spec: ServeSpec, field: str = "images") -> list[bytes]:
    """Base64 strings -> bytes, refusing too many (413) or too large ones (413), before decoding."""
    if len(images) > spec.max_images:
        raise HTTPException(413, detail=f"too many images: {len(images)} > limit {spec.max_images}")
    out = []
    for i, b64 in enumerate(images):
        # base64 holds 3 bytes per 4 characters: refuse on the length alone, before decoding.
        if len(b64) // 4 * 3 > spec.max_image_bytes + 2:
            raise HTTPException(
                413, detail=f"{field}[{i}] is about {len(b64) // 4 * 3} bytes > limit {spec.max_image_bytes}"
            )
        out.append(base64.b64decode(b64))
    return out


def decode_request(images: list[bytes], prep, max_pixels: int) -> np.ndarray:
    """Encoded images -> uint8 (n, 3, S, S); a bad one is a 422 naming it."""
    from cluster.data.images import decode_images

    decoded = decode_images(images, prep, skip_bad_rows=True, max_pixels=max_pixels)
    if decoded.bad:
        first = decoded.bad[0]
        raise HTTPException(422, detail=f"images[{first.row}] {first.reason}")
    return decoded.pixels


def explain_response(
    model, data: bytes, target: str | None, max_pixels: int, max_explain_pixels: int, values: bool = True
) -> dict:
    """Gradient x input on a map of at most ``max_explain_pixels`` (the image's own size when it is
    within that) as a 16-bit PNG heat map, a PNG overlay and, unless not ``values``, numbers (float32:
    the shortest decimal that reads back as the same float32, a third shorter than float64's)."""
    from cluster.errors import UserError
    from cluster.models.saliency import explain_image, heatmap_png

    try:
        s = explain_image(
            model, data, target=target, max_pixels=max_pixels, max_map_pixels=max_explain_pixels
        )
    except UserError as exc:
        raise HTTPException(422, detail=f"image: {str(exc).removeprefix('image ')}") from exc
    h, w = s.values.shape
    heatmap, scale = heatmap_png(s.values)
    saliency = {
        "width": w,
        "height": h,
        "image_width": s.image_size[0],
        "image_height": s.image_size[1],
        "scale": scale,
        "heatmap_png": heatmap,
        "overlay_png": s.overlay_png,
    }
    if values:
        saliency["values"] = s.values.astype(np.float32).astype(str).astype(float).tolist()
    return {
        "label": s.label,
        "score": float(s.probs[s.target]),
        "method": "gradient x input (pixels, 0..1, summed over RGB)",
        "saliency": saliency,
    }
