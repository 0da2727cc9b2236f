"""Request and response models of the translation API (serve/translate.py); docs/contracts.md."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve.schemas import Text


class TranslateRequest(BaseModel):
    """Source texts; each one is checked (valid Unicode, not blank) before it is batched."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = Field(
        ..., min_length=1, description="Texts to translate (limits: GET /v1/model, `limits`)."
    )


class TranslatorRef(BaseModel):
    id: str
    task: str = "translation"


class TranslateResponse(BaseModel):
    model: TranslatorRef
    translations: list[str] = Field(..., description="One translation per text, in request order.")


class TranslatorInfo(BaseModel):
    id: str
    task: str = Field("translation", description="What the served model does: POST /v1/translate.")
    path: str | None = Field(
        None, description="The model directory on the server: only with an API key configured (and sent)."
    )
    precision: str
    generation: dict = Field(..., description="num_beams and max_new_tokens of every translation.")
    lineage: dict
    metrics: dict | None = Field(None, description="Latest finished evaluation of this model, if any.")
    limits: dict
