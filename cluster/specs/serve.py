"""The online scorer's spec (serve/app.py, jobs/deploy.py); importable from cluster/specs/workloads.py too."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from cluster.specs.fields import (
    MAX_BATCH,
    MAX_CPUS,
    MAX_GPUS,
    MAX_LENGTH,
    MAX_WORKERS,
    PRECISION_HELP,
    ModelArg,
    Name,
    Precision,
)
from cluster.specs.parse import Spec
from cluster.specs.search_space import Float, Int


def _parse_autoscale(value: Any) -> Any:
    if isinstance(value, str):
        try:
            low, high = (int(x) for x in value.split(":"))
        except ValueError as exc:
            raise ValueError(f"must be MIN:MAX, e.g. 1:4; got {value!r}") from exc
        return [low, high]
    return value


def _check_autoscale(value: list[int]) -> list[int]:
    if not (0 <= value[0] <= value[1] and value[1] >= 1):
        raise ValueError(f"needs 0 <= MIN <= MAX and MAX >= 1, got {value[0]}:{value[1]}")
    return value


AutoscaleRange = Annotated[list[Int], Field(min_length=2, max_length=2), AfterValidator(_check_autoscale)]
Autoscale = Annotated[AutoscaleRange | None, BeforeValidator(_parse_autoscale)]


class ServeSpec(Spec):
    """The online scorer (serve/app.py, jobs/deploy.py)."""

    model: ModelArg = Field("best", description="Model dir, registered id or alias (best, serving).")
    replicas: Int = Field(1, ge=1, le=MAX_WORKERS, description="Fixed number of replicas.")
    autoscale: Autoscale = Field(
        None,
        description="MIN:MAX replicas, autoscaled on ongoing requests per replica (instead of --replicas).",
    )
    target_ongoing_requests: Float = Field(
        16.0, gt=0, le=10_000, description="Autoscaling target per replica."
    )
    max_batch_size: Int = Field(
        32, ge=1, le=MAX_BATCH, description="Texts per dynamic batch (1 = batching off)."
    )
    batch_wait_ms: Float = Field(
        50.0,
        ge=0,
        le=10_000,
        description="Under concurrent load, how long a batch waits to fill (ms); a lone request never waits.",
    )
    max_texts: Int = Field(64, ge=1, description="Texts per request (more: 413).")
    max_chars: Int = Field(5000, ge=1, description="Characters per text (more: 413).")
    max_images: Int = Field(16, ge=1, description="Images per request, image models (more: 413).")
    max_image_bytes: Int = Field(
        4 * 2**20, ge=1, description="Bytes per encoded image, image models (more: 413)."
    )
    max_image_pixels: Int = Field(
        4096 * 4096, ge=1, description="Pixels per image, checked from its header (more: 422)."
    )
    max_explain_pixels: Int = Field(
        128 * 128,
        ge=64,
        le=4096 * 4096,
        description="Pixels of an image's saliency map (/v1/explain): a larger image is explained on a "
        "map reduced to this, its aspect ratio kept.",
    )
    max_length: Int = Field(
        128, ge=1, le=MAX_LENGTH, description="Tokens per text (longer texts are truncated)."
    )
    precision: Precision = Field("auto", description=PRECISION_HELP)
    gpus_per_replica: Float | None = Field(
        None,
        ge=0,
        le=MAX_GPUS,
        description="GPUs per replica (default: 1 when the cluster has GPUs, else 0).",
    )
    cpus_per_replica: Float = Field(
        1.0, ge=0, le=MAX_CPUS, description="CPUs (and torch threads) per replica."
    )
    api_key_env: Name = Field(
        "EVALCLUSTER_API_KEY",
        description="Variable holding the API key (or ${NAME}_FILE a file with it); set = requests need it.",
    )
    host: Name = Field("127.0.0.1", description="Interface Serve's HTTP proxy listens on.")
    port: Int = Field(8000, ge=1, le=65535, description="HTTP port of Serve's proxy.")
