"""Typed specs (dataclasses) for every workload, and strict YAML loading.

YAML maps onto the dataclasses field by field. An unknown key or a value of the
wrong type fails at once with one line naming the key, e.g.

    error: sweep.yaml: unknown key "search.learnign_rate" (did you mean "learning_rate"?)

Specs are plain data: the jobs turn them into Ray calls.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from cluster.errors import UserError, did_you_mean

T = TypeVar("T")

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class DataSpec:
    """Where labelled (or unlabelled) text lives and which columns to use."""

    path: str = ""  # file, directory or glob; local or a pyarrow-filesystem URI (s3://, gs://)
    text_column: str = "text"
    label_column: str | None = "label"  # None for unlabelled text (pretraining)
    id_column: str | None = None  # copied into predictions.parquet when set
    slice_column: str | None = None  # per-slice metrics in evaluation


@dataclass
class EvaluateSpec:
    """One sharded evaluation run (jobs/evaluate.py)."""

    model: str = "best"  # directory, registered id, alias (best, serving) or `base`
    data: DataSpec = field(default_factory=DataSpec)
    out: str | None = None  # default: the run's artifact directory
    batch_size: int = 64  # rows per forward pass
    workers: int | None = None  # inference actors; None = one per GPU, or per 2 free CPUs
    gpus_per_worker: float | None = None  # None = 1 when the cluster has GPUs, else 0
    precision: Precision = "auto"  # auto = bf16 where the hardware runs it natively
    max_length: int = 128  # tokens per text (longer texts are truncated)
    bootstrap: int = 1000  # Poisson bootstrap replicates for the 95% CIs (0 = off)
    limit: int | None = None  # evaluate only the first N rows
    seed: int = 0  # bootstrap seed
    owner: str | None = None  # default: the OS user
    overwrite: bool = False  # allow --out to hold an earlier run


@dataclass
class ServeSpec:
    """The online scorer (serve/app.py)."""

    model: str = "best"
    replicas: int = 1
    autoscale_min: int | None = None  # both set = autoscaling instead of fixed replicas
    autoscale_max: int | None = None
    target_ongoing_requests: float = 16.0
    max_batch_size: int = 32
    batch_wait_ms: float = 50.0  # under concurrent load only: a lone request never waits
    max_texts: int = 64  # texts per request
    max_chars: int = 5000  # characters per text
    max_length: int = 128
    precision: Precision = "auto"
    gpus_per_replica: float | None = None  # None = 1 when the cluster has GPUs, else 0
    cpus_per_replica: float = 1.0
    api_key_env: str = "EVALCLUSTER_API_KEY"  # requests need `Authorization: Bearer KEY` when set
    host: str = "127.0.0.1"
    port: int = 8000


# --------------------------------------------------------------------------- loading


def load_yaml(path: str | Path, cls: type[T]) -> T:
    """Read a YAML file into the dataclass ``cls``; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return from_dict(cls, raw, where=path.name)


def from_dict(cls: type[T], data: Any, where: str = "spec", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        what = f'"{prefix.rstrip(".")}"' if prefix else "the top level"
        raise UserError(f"{where}: {what} must be a mapping, got {_tname(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise UserError(
                f'{where}: unknown key "{dotted}"{did_you_mean(key, names)}; allowed: {", ".join(names)}'
            )
        kwargs[key] = _coerce(hints[key], value, where, dotted)
    return cls(**kwargs)


def to_dict(spec: Any) -> dict:
    """Plain-data view of a spec (for the registry and job entrypoints)."""
    return dataclasses.asdict(spec)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where, key)
            except UserError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else _type_error(where, key, tp, value)
    if origin is Literal:
        if value in args:
            return value
        raise UserError(
            f'{where}: "{key}" must be one of {", ".join(map(str, args))}, '
            f"got {value!r}{did_you_mean(value, args)}"
        )
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(where, key, tp, value)
        return [_coerce(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, key, tp, value)
        return {k: _coerce(args[1], v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise _type_error(where, key, tp, value)
    raise TypeError(f"unsupported spec type {tp!r} for {key}")  # a bug in a spec, not user input


def _type_error(where: str, key: str, tp: Any, value: Any) -> UserError:
    return UserError(f'{where}: "{key}" must be {_tname_type(tp)}, got {_tname(value)} {value!r}')


def _tname(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _tname_type(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_tname_type(a) for a in args)
    if origin is list:
        return f"a list of {_tname_type(args[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean", type(None): "null"}.get(
        tp, str(tp)
    )


# --------------------------------------------------------------------------- sweeps

# A hyperparameter is a fixed value or one distribution, written as a one-key mapping:
#   {choice: [16, 32]}  {grid: [1, 2]}  {uniform: [0.0, 0.1]}  {loguniform: [1e-5, 1e-4]}  {randint: [0, 100]}
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
Param = int | float | dict[str, list[Any]]


@dataclass
class SearchSpace:
    """What each trial's fine-tuning uses (fixed values or distributions, see DISTRIBUTIONS)."""

    learning_rate: Param = field(default_factory=lambda: {"loguniform": [2e-5, 1e-4]})
    batch_size: Param = 32  # rows per optimizer step
    epochs: Param = 2  # passes over the training rows
    warmup_ratio: Param = 0.1  # share of steps with linearly rising learning rate
    weight_decay: Param = 0.01
    max_length: Param = 64  # tokens per text; tweets average ~33
    seed: Param = 0  # model head init and data order


@dataclass
class SchedulerSpec:
    kind: Literal["asha", "none"] = "asha"  # asha: stop weak trials early
    grace_period: int = 1  # validations before a trial can be stopped
    reduction_factor: int = 2  # keep the best 1/reduction_factor at each rung


@dataclass
class ResourcesSpec:
    cpus: float | None = None  # per trial; None = all CPUs of a node / max_concurrent_trials
    gpus: float | None = None  # per trial; None = 1 when the cluster has GPUs, else 0


@dataclass
class SweepSpec:
    """A Ray Tune fine-tuning sweep (jobs/sweep.py)."""

    name: str | None = None  # experiment name (default: sweep-<time>); `sweep resume NAME`
    model: str = "base"  # any MODEL argument; a bare encoder gets a new classification head
    train: DataSpec = field(default_factory=lambda: DataSpec("data/sample/train.parquet"))
    validation: DataSpec = field(default_factory=lambda: DataSpec("data/sample/validation.parquet"))
    search: SearchSpace = field(default_factory=SearchSpace)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    search_alg: Literal["random", "grid"] = "random"
    num_samples: int = 4  # random: trials; grid: repeats of the whole grid
    max_concurrent_trials: int | None = None  # None = as many as the resources allow
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    metric: str = "f1_macro"  # validation metric that ranks trials and checkpoints
    mode: Literal["max", "min"] = "max"
    precision: Precision = "auto"  # auto = bf16 autocast where native
    evals_per_epoch: int = 2  # validations per epoch (ASHA decides at each one)
    max_train_rows: int | None = None  # stratified subsample of the training rows
    max_validation_rows: int | None = None
    storage_path: str | None = None  # local dir or URI; default EVALCLUSTER_HOME/sweeps
    max_failures: int = 2  # retries of a failed trial, from its last checkpoint
    checkpoints_to_keep: int = 1  # per trial, best by `metric`
    seed: int = 0  # seeds the search: same spec + seed = same trial configurations
    owner: str | None = None


@dataclass
class PretrainSpec:
    """Masked-language-model continued pretraining (jobs/pretrain.py)."""

    data: DataSpec = field(default_factory=lambda: DataSpec("data/sample/train.parquet", label_column=None))
    model: str = "base"
    epochs: int = 1
    mlm_probability: float = 0.15  # share of tokens masked
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    max_rows: int | None = None  # cap on training texts
    heldout_fraction: float = 0.05  # texts kept aside for perplexity before/after
    precision: Precision = "auto"
    seed: int = 0
    out: str | None = None  # default: EVALCLUSTER_HOME/models/<id>
    workers: int | None = None  # >1: data-parallel Ray Train TorchTrainer; None = one per GPU if >1 GPUs
    owner: str | None = None
