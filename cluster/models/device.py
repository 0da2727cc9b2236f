"""Where a model runs and at what precision: the device, bf16/fp16 autocast, and whether this CPU has
native bf16."""

from __future__ import annotations

import contextlib
from pathlib import Path

from cluster.errors import UserError


def pick_device(gpus: float | None = None) -> str:
    """``cuda`` when a GPU is visible to this process (and not refused), else ``cpu``."""
    import torch

    return "cuda" if (gpus is None or gpus > 0) and torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: str) -> str:
    """auto -> bf16 where the hardware runs it natively (CUDA bf16, AVX-512 BF16 / AMX CPUs)."""
    import torch

    if requested == "fp16" and device != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast(precision: str, device: str):
    """The autocast context for a precision (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)
