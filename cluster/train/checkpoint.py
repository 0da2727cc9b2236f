"""Trainer state in a checkpoint directory, stored and loaded without pickle.

A sweep trial's checkpoint is its model (safetensors, via ``save_pretrained``) plus
the trainer state written here: optimizer, learning-rate scheduler, step, and every
RNG state (Python, NumPy, torch CPU, CUDA when present), so a retried trial resumes
exactly where it stopped. Checkpoints live in sweep storage that other people (or
jobs) can write to, and unpickling a file runs whatever code it names; so:

    trainer_state.safetensors  every tensor and array of the state (keys "0", "1", ...)
    trainer_state.json         the rest: numbers, strings, lists, tuples, dicts, with
                               {"__tensor__": "0"} where a tensor was

Loading builds nothing but those types. Any other file in the directory
(a ``state.pt`` from an older version, or one planted there) is never opened.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import UserError

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
FORMAT = 1
# Markers for what JSON cannot hold as is; any other "__x__" key is refused when loading.
TENSOR, ARRAY, TUPLE, ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"


def save_trainer_state(directory: str | Path, optimizer, scheduler, step: int) -> None:
    """Write the optimizer's and scheduler's state, ``step`` and every RNG state into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": int(step),
        "rng": rng_states(),
    }
    tensors: dict = {}
    tree = _encode(state, tensors)
    save_file(tensors, directory / STATE_TENSORS)
    (directory / STATE_JSON).write_text(json.dumps({"format": FORMAT, "state": tree}))


def load_trainer_state(directory: str | Path, optimizer, scheduler) -> int:
    """Restore what :func:`save_trainer_state` wrote into ``optimizer``, ``scheduler`` and the
    RNGs; returns the step. A missing or altered state is one clear error, never code run."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / STATE_JSON).is_file() or not (directory / STATE_TENSORS).is_file():
        raise UserError(
            f"checkpoint {directory} has no trainer state ({STATE_JSON} + {STATE_TENSORS}); "
            "pickled files such as state.pt are never loaded (a sweep checkpointed by an older "
            "version cannot be resumed: start it again)"
        )
    try:
        saved = json.loads((directory / STATE_JSON).read_text())
        if saved.get("format") != FORMAT:
            raise ValueError(f"format {saved.get('format')!r}, expected {FORMAT}")
        state = _decode(saved["state"], load_file(directory / STATE_TENSORS))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_states(state["rng"])
        return int(state["step"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError, SafetensorError) as exc:
        raise UserError(f"checkpoint {directory} holds an unreadable trainer state: {exc}") from exc


def rng_states() -> dict:
    """Every RNG a training step draws from: Python's, NumPy's global, torch's (CPU, CUDA)."""
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ------------------------------------------------------------------ the JSON + tensors encoding


def _encode(value: Any, tensors: dict) -> Any:
    """``value`` as JSON, its tensors and arrays moved into ``tensors`` (a safetensors dict)."""
    import torch

    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().cpu().contiguous()
        return {TENSOR: key}
    if isinstance(value, np.ndarray):
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
        return {ARRAY: key}
    if isinstance(value, tuple):
        return {TUPLE: [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not _is_marker(k) for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        # e.g. the optimizer's per-parameter state, keyed by int
        return {ITEMS: [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's trainer state")


def _decode(value: Any, tensors: dict) -> Any:
    """The inverse of :func:`_encode`; anything but its own markers is refused."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    markers = [k for k in value if _is_marker(k)]
    if not markers:
        return {k: _decode(v, tensors) for k, v in value.items()}
    if len(value) != 1 or markers[0] not in (TENSOR, ARRAY, TUPLE, ITEMS):
        raise ValueError(f"unexpected entry {sorted(value)}")
    ((marker, inner),) = value.items()
    if marker == TENSOR:
        return tensors[inner]
    if marker == ARRAY:
        return tensors[inner].numpy()
    if marker == TUPLE:
        return tuple(_decode(v, tensors) for v in inner)
    return {_decode(k, tensors): _decode(v, tensors) for k, v in inner}


def _is_marker(key: str) -> bool:
    return key.startswith("__") and key.endswith("__")


# ------------------------------------------------------------------ completeness on storage
#
# A checkpoint directory is copied to sweep storage file by file, and the driver deletes the
# ones it no longer keeps: after a killed trial or driver, storage can hold a directory that
# is half written or half deleted. Each checkpoint therefore carries a manifest (written
# into the directory before it is copied) listing its files and their sizes; a checkpoint
# is complete when every listed file is there with its size. Resuming looks for the newest
# complete one, whatever the driver's last experiment snapshot remembered.

MANIFEST = "evalcluster_checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Tune's directory names: checkpoint_000003


def write_manifest(directory: str | Path, step: int, iteration: int, metrics: dict) -> None:
    """List every file of checkpoint ``directory`` (sizes in bytes) with the trial's ``step``,
    Tune's ``iteration`` (1-based count of reports) and the reported validation ``metrics``."""
    directory = Path(directory)
    files = {
        p.relative_to(directory).as_posix(): p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": FORMAT, "step": int(step), "iteration": int(iteration), "metrics": metrics}
    (directory / MANIFEST).write_text(json.dumps({**manifest, "files": files}))


def complete_checkpoints(fs, trial_dir: str) -> tuple[list[tuple[str, dict]], int]:
    """The complete checkpoints under ``trial_dir`` on pyarrow filesystem ``fs``, newest first,
    as (path, manifest); and the highest checkpoint index present, complete or not (-1: none)."""
    states = checkpoint_states(fs, trial_dir)
    complete = [(path, manifest) for path, manifest, _ in states if manifest is not None]
    highest = int(states[0][0].rsplit("_", 1)[-1]) if states else -1
    return complete, highest


def checkpoint_states(fs, trial_dir: str) -> list[tuple[str, dict | None, str | None]]:
    """Every checkpoint directory under ``trial_dir``, newest first: (path, its manifest when it is
    complete, else None and why not)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    dirs = sorted(
        (int(i.base_name[len(CHECKPOINT_PREFIX) :]), i.path)
        for i in infos
        if i.type == pafs.FileType.Directory
        and i.base_name.startswith(CHECKPOINT_PREFIX)
        and i.base_name[len(CHECKPOINT_PREFIX) :].isdigit()
    )
    return [(path, *_completeness(fs, path)) for _, path in reversed(dirs)]


def _completeness(fs, path: str) -> tuple[dict | None, str | None]:
    """(the manifest, None) when every file it lists is there with its size, else (None, why)."""
    import pyarrow.fs as pafs

    try:
        with fs.open_input_stream(f"{path}/{MANIFEST}") as f:
            manifest = json.loads(f.read())
        wanted = manifest["files"]
        infos = fs.get_file_info([f"{path}/{name}" for name in wanted])
    except FileNotFoundError:
        return None, f"no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable {MANIFEST} ({type(exc).__name__})"
    for info, (name, size) in zip(infos, wanted.items(), strict=True):
        if info.type != pafs.FileType.File:
            return None, f"{name} is missing"
        if info.size != size:
            return None, f"{name} is {info.size} bytes, its manifest says {size}"
    return manifest, None
