"""Translation specs: a parallel corpus's columns, a translation sweep's model, generation settings.

``DataSpec`` (cluster/specs/workloads.py) declares the column fields below, so a translation
model reads the same ``--data`` / ``train:`` / ``validation:`` specs as a classifier, with its
own columns:

    train: {path: data/translation/train.parquet, source_column: en, target_column: fr}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from cluster.specs.fields import Name
from cluster.specs.parse import Spec
from cluster.specs.search_space import Int

MAX_CHARS = 2000  # default characters per source or reference text (the longest verse has 528)


def _split(value):
    """``a,b`` from the command line -> ["a", "b"]; a YAML list passes through."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


# The fields DataSpec declares for parallel corpora (translation models; classifiers ignore them).
SourceColumn = Annotated[
    Name, Field(default="source", description="Translation: column holding the source text.")
]
TargetColumn = Annotated[
    Name,
    Field(
        default="target",
        description="Translation: column holding the reference translation (the training target).",
    ),
]
ReferenceColumns = Annotated[
    list[Name],
    BeforeValidator(_split),
    Field(
        default_factory=list,
        description="Translation: more reference columns for evaluation (comma-separated); a row may "
        "leave them empty.",
    ),
]
# How an evaluation (PipelineSpec) and the scorer (ServeSpec) generate translations.
NumBeams = Annotated[
    Int, Field(default=1, ge=1, le=16, description="Translation: beams (1 = greedy decoding).")
]
MaxNewTokens = Annotated[
    Int,
    Field(default=128, ge=1, le=1024, description="Translation: generated tokens per sentence at most."),
]
MaxChars = Annotated[
    Int,
    Field(
        default=MAX_CHARS,
        ge=1,
        description="Translation: characters allowed per source or reference text; a longer one is an "
        "error naming its row (or skipped and counted with --skip-bad-rows).",
    ),
]


class Seq2SeqSpec(Spec):
    """A translation sweep's model and validation (``task: translation``; cluster/models/seq2seq_build.py).

    When MODEL is a bare encoder (``base``), each trial builds an ``EncoderDecoderModel``: MODEL's
    encoder and a new decoder of these sizes over a target tokenizer trained on the training split's
    targets. A translation model directory (Marian, T5, BART, an earlier sweep's) is fine-tuned as is.
    """

    vocab_size: Int = Field(8000, ge=100, le=64000, description="Target tokenizer's vocabulary (BPE).")
    decoder_layers: Int = Field(2, ge=1, le=12, description="Layers of the new decoder.")
    decoder_hidden: Int = Field(256, ge=32, le=1024, description="Width of the new decoder.")
    decoder_heads: Int = Field(4, ge=1, le=16, description="Attention heads of the new decoder.")
    max_target_length: Int = Field(128, ge=4, le=1024, description="Target tokens per training pair.")
    max_new_tokens: Int = Field(
        128, ge=1, le=1024, description="Generated tokens per sentence at validation (greedy)."
    )

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.decoder_hidden % self.decoder_heads:
            raise ValueError(
                f"decoder_hidden {self.decoder_hidden} must be a multiple of "
                f"decoder_heads {self.decoder_heads}"
            )
        return self
