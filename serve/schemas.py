"""Request and response models of the HTTP API (pydantic lives only here, at the edge)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(..., min_length=1, description="Texts to classify (limits: see GET /v1/model).")


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
    text: str = Field(..., min_length=1)


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
    path: str
    precision: str
    lineage: dict
    metrics: dict | None = Field(None, description="Latest finished evaluation of this model, if any.")
    limits: dict


class Health(BaseModel):
    status: str
    model: str
