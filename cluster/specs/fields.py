"""The field types the workload specs share (cluster/specs/workloads.py, cluster/specs/serve.py)."""

from __future__ import annotations

import codecs
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, Strict

from cluster.errors import UserError
from cluster.specs.parse import PathField
from cluster.stats.metrics import metric_info, slice_metrics_allowed

# Upper limits (sanity bounds, in README's "Limits"): a value past one is a typo, not a bigger run.
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are 32-bit
MAX_BATCH = 65536  # rows per optimizer step or forward pass
MAX_LENGTH = 8192  # tokens per text
MAX_BOOTSTRAP = 100_000  # bootstrap replicates
MAX_WORKERS = 4096  # actors, trials or replicas at once
MAX_CPUS = 4096
MAX_GPUS = 64

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Bool = Annotated[bool, Strict()]
Name = Annotated[str, Field(min_length=1)]
DataPath = Annotated[str, Field(min_length=1), PathField("input")]
OutPath = Annotated[str | None, PathField("output")]
ModelArg = Annotated[str, Field(min_length=1), PathField("model")]


def _known_metric(name: str) -> str:
    try:
        metric_info(name)
    except UserError as exc:
        raise ValueError(str(exc)) from exc
    return name


def _known_encoding(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError as exc:
        raise ValueError(f"unknown encoding {name!r}; e.g. utf-8, latin-1, cp1252, utf-16") from exc
    return name


Encoding = Annotated[str, AfterValidator(_known_encoding)]  # a Python codec name
Metric = Annotated[str, AfterValidator(_known_metric)]  # a row of cluster.stats.metrics.METRICS


def _slice_metric(name: str) -> str:
    if name not in slice_metrics_allowed():
        raise ValueError(f"must be one of {', '.join(slice_metrics_allowed())}, got {name!r}")
    return name


SliceMetric = Annotated[str, AfterValidator(_slice_metric)]  # a paired headline metric of the table
PRECISION_HELP = "auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)."
OWNER_HELP = "Recorded owner of the run (default: the OS user)."
