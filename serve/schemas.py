"""Request and response models of the HTTP API (pydantic lives only here, at the edge)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def check_text(text: object) -> object:
    """A text the tokenizer can take: encodable as UTF-8 and not blank (other types: left to pydantic).

    JSON may carry a lone surrogate (``"x\\ud800"``), which Python decodes into a str the
    tokenizer rejects; refused here, per text, it never reaches a batch shared with other
    requests. The message shows the character escaped, never raw (it could not be encoded).
    """
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"not valid Unicode text: lone surrogate {text[exc.start]!r} at character {exc.start}"
        ) from exc
    if not text.strip():
        raise ValueError("text is empty (only whitespace)")
    return text


# Before pydantic's own str check, which words a lone surrogate differently in a plain field
# and lets it through inside a list: one rule and one message for /v1/predict and /v1/explain.
Text = Annotated[str, BeforeValidator(check_text)]


def check_base64(value: object) -> object:
    """Standard base64 (RFC 4648, padding required; whitespace refused) of at least one byte."""
    if not isinstance(value, str):
        return value
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64 ({exc}); send the image file's bytes base64-encoded") from exc
    if not data:
        raise ValueError("empty image (0 bytes)")
    return value


def one_of(data: object, text_field: str, image_field: str) -> object:
    """Exactly one of the two input fields, checked first, so that a request without either
    (a misspelt field, say) is told which fields there are."""
    if isinstance(data, dict) and (data.get(text_field) is None) == (data.get(image_field) is None):
        raise ValueError(f'give either "{text_field}" (a text model) or "{image_field}" (an image model)')
    return data


# An image file (PNG, JPEG, ...) base64-encoded; decoded and checked by the replica.
ImageB64 = Annotated[str, BeforeValidator(check_base64)]


class PredictRequest(BaseModel):
    """Texts for a text model, or images for an image model (GET /v1/model: modality, limits)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Text] | None = Field(
        None, min_length=1, description="Texts to classify (text models; limits: see GET /v1/model)."
    )
    images: list[ImageB64] | None = Field(
        None, min_length=1, description="Base64 PNG/JPEG images to classify (image models)."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, data):
        return one_of(data, "texts", "images")


class Prediction(BaseModel):
    label: str
    score: float = Field(..., description="Probability of `label`.")
    probs: dict[str, float] = Field(..., description="Probability of every label.")


class ModelRef(BaseModel):
    id: str
    labels: list[str]


class PredictResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text | None = Field(None, min_length=1, description="A text (text models).")
    image: ImageB64 | None = Field(None, description="A base64 PNG/JPEG image (image models).")
    target: str | None = Field(None, description="Image models: the label to explain (default: predicted).")
    values: bool = Field(
        True, description="Image models: false leaves the numbers out (the 16-bit heat map PNG holds them)."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, data):
        return one_of(data, "text", "image")


class TokenAttribution(BaseModel):
    token: str
    attribution: float


class Saliency(BaseModel):
    width: int = Field(..., description="The map's width: the image's, or less (max_explain_pixels).")
    height: int = Field(..., description="The map's height (the aspect ratio of the image).")
    image_width: int
    image_height: int
    scale: float = Field(..., description="max |gradient x input| over the map.")
    heatmap_png: str = Field(
        ..., description="Base64 16-bit gray PNG of the map: value = (pixel - 32768) / 32767 * scale."
    )
    overlay_png: str = Field(..., description="Base64 PNG: the image in gray, red (+) / blue (-) saliency.")
    values: list[list[float]] | None = Field(
        None, description='Gradient x input per map pixel, rows (left out with "values": false).'
    )


class ExplainResponse(BaseModel):
    model: ModelRef
    label: str
    score: float
    method: str
    tokens: list[TokenAttribution] | None = Field(None, description="Text models: per token.")
    saliency: Saliency | None = Field(None, description="Image models: per pixel of a bounded map.")


class ModelInfo(BaseModel):
    id: str
    modality: str = Field("text", description='"text" (send "texts") or "image" (send "images").')
    task: str = Field(
        "classification", description="classification (POST /v1/predict) or segmentation (/v1/segment)."
    )
    labels: list[str]
    path: str | None = Field(
        None, description="The model directory on the server: only with an API key configured (and sent)."
    )
    precision: str
    lineage: dict
    metrics: dict | None = Field(None, description="Latest finished evaluation of this model, if any.")
    limits: dict


class Health(BaseModel):
    status: str
    model: str
