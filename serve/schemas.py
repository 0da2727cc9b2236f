"""Request and response models of the HTTP API (pydantic lives only here, at the edge)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


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


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = Field(..., min_length=1, description="Texts to classify (limits: see GET /v1/model).")


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
    text: Text = Field(..., min_length=1)


class TokenAttribution(BaseModel):
    token: str
    attribution: float


class ExplainResponse(BaseModel):
    model: ModelRef
    label: str
    score: float
    method: str
    tokens: list[TokenAttribution]


class ModelInfo(BaseModel):
    id: str
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
