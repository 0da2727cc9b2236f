"""The spec of masked-language-model continued pretraining (`evalctl pretrain`, jobs/pretrain.py)."""

from __future__ import annotations

from pydantic import Field

from cluster.specs.fields import (
    MAX_BATCH,
    MAX_LENGTH,
    MAX_SEED,
    MAX_WORKERS,
    OWNER_HELP,
    PRECISION_HELP,
    ModelArg,
    OutPath,
    Precision,
)
from cluster.specs.parse import Spec
from cluster.specs.search_space import Float, Int
from cluster.specs.workloads import TextSpec


class PretrainSpec(Spec):
    """Masked-language-model continued pretraining (jobs/pretrain.py)."""

    data: TextSpec = Field(
        default_factory=lambda: TextSpec(path="data/sample/train.parquet"), description="Unlabelled text."
    )
    model: ModelArg = Field(
        "base", description="MODEL to continue pretraining (base, a dir, an id or alias)."
    )
    epochs: Int = Field(1, ge=1, le=1000, description="Passes over the training texts.")
    mlm_probability: Float = Field(0.15, gt=0, lt=1, description="Share of tokens masked.")
    learning_rate: Float = Field(5e-5, gt=0, le=1, description="AdamW peak learning rate.")
    warmup_ratio: Float = Field(0.06, ge=0, le=1, description="Share of steps with a rising learning rate.")
    weight_decay: Float = Field(
        0.01, ge=0, le=1, description="AdamW weight decay (not on biases, LayerNorm)."
    )
    batch_size: Int = Field(32, ge=1, le=MAX_BATCH, description="Texts per optimizer step.")
    max_length: Int = Field(64, ge=1, le=MAX_LENGTH, description="Tokens per text.")
    max_rows: Int | None = Field(None, ge=1, description="Use at most this many texts.")
    heldout_fraction: Float = Field(
        0.05, gt=0, lt=1, description="Share of texts kept aside for perplexity before and after."
    )
    precision: Precision = Field("auto", description=PRECISION_HELP)
    seed: Int = Field(0, ge=0, le=MAX_SEED, description="Seeds the held-out split, masking and data order.")
    out: OutPath = Field(None, description="Model dir to write (default: in the registry).")
    workers: Int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description="Data-parallel Ray Train workers (default: one per GPU when there are several).",
    )
    owner: str | None = Field(None, description=OWNER_HELP)
