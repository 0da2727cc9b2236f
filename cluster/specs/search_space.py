"""A sweep's search space: each hyperparameter is a fixed value or one distribution.

In YAML a distribution is a one-key mapping, a discriminated union on that key:

    learning_rate: {loguniform: [1.0e-5, 1.0e-4]}    # log-uniform on [low, high]
    warmup_ratio:  {uniform: [0.0, 0.1]}             # uniform on [low, high]
    seed:          {randint: [0, 100]}               # an integer in [low, high)
    batch_size:    {choice: [16, 32]}                # sampled from the list
    epochs:        {grid: [1, 2]}                    # every value (search_alg: grid)

Each field's range applies to every value a distribution can give, every number is finite
(no .inf/.nan), and integer fields (batch_size, epochs, max_length, seed) accept only integer
distributions.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    Discriminator,
    Field,
    Strict,
    Tag,
    model_validator,
)

from cluster.specs.fields import MAX_BATCH, MAX_LENGTH, MAX_SEED
from cluster.specs.parse import Spec


def _number(value: Any) -> Any:
    """Before the range: .nan compares false with every bound, and .inf would be named as out of range."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got a boolean {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


Int = Annotated[int, Strict()]  # no silent bool/str/float -> int
# ints are fine; booleans, .inf and .nan are not (a non-finite value would reach Ray, the registry's JSON)
Float = Annotated[float, BeforeValidator(_number), AllowInfNan(False)]


class Choice(Spec):
    choice: list[Any] = Field(min_length=1, description="Values sampled with equal probability.")


class Grid(Spec):
    grid: list[Any] = Field(min_length=1, description="Values all tried (search_alg: grid).")


class _Range(Spec):
    @model_validator(mode="after")
    def _ordered(self):
        low, high = self.bounds
        if not low < high:
            raise ValueError(f"{self.kind} needs [low, high] with low < high, got {[low, high]}")
        return self

    @property
    def kind(self) -> str:
        return next(iter(type(self).model_fields))

    @property
    def bounds(self) -> list:
        return getattr(self, self.kind)


class Uniform(_Range):
    uniform: list[Float] = Field(min_length=2, max_length=2, description="[low, high]")


class LogUniform(_Range):
    loguniform: list[Float] = Field(min_length=2, max_length=2, description="[low, high], low > 0")

    @model_validator(mode="after")
    def _positive(self):
        if self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs low > 0 (a log scale), got {self.loguniform}")
        return self


class RandInt(_Range):
    randint: list[Int] = Field(min_length=2, max_length=2, description="[low, high): high excluded")


DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")


def kind_of(value: Any) -> str:
    """ "fixed" or the distribution's name."""
    if isinstance(value, Spec):
        return next(iter(type(value).model_fields))
    return "fixed"


def values_of(value: Any) -> list:
    """The values to check a parameter's range on: every listed value, or a range's extremes
    (randint's high is excluded; its values are never listed, [0, 2**32] would take gigabytes)."""
    kind = kind_of(value)
    if kind == "fixed":
        return [value]
    args = list(getattr(value, kind))
    return [args[0], args[1] - 1] if kind == "randint" else args


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    return kind_of(value)


def _in_range(kind: type, ge=None, gt=None, le=None):
    """Check that every value of a parameter is of ``kind`` and in range."""

    def check(value: Any) -> Any:
        dist = kind_of(value)
        if kind is int and dist in ("uniform", "loguniform"):
            raise ValueError(
                f"takes integers, but {dist} draws fractional values; use randint, choice or grid"
            )
        for v in values_of(value):
            _check_one(v, kind, ge, gt, le, dist)
        return value

    return check


def _check_one(v: Any, kind: type, ge, gt, le, dist: str) -> None:
    where = "" if dist == "fixed" else f" (in {dist})"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
        raise ValueError(f"must be {'an integer' if kind is int else 'a number'}, got {v!r}{where}")
    if not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v!r}{where}")
    for ok, op, bound in ((ge is None or v >= ge, ">=", ge), (gt is None or v > gt, ">", gt)):
        if not ok:
            raise ValueError(f"must be {op} {bound}, got {v!r}{where}")
    if le is not None and v > le:
        raise ValueError(f"must be <= {le}, got {v!r}{where}")


def param(kind: type, *, ge=None, gt=None, le=None):
    """The type of one hyperparameter: a fixed ``kind`` value or a distribution, every value in range."""
    fixed = Int if kind is int else Float
    return Annotated[
        Annotated[fixed, Tag("fixed")]
        | Annotated[Choice, Tag("choice")]
        | Annotated[Grid, Tag("grid")]
        | Annotated[Uniform, Tag("uniform")]
        | Annotated[LogUniform, Tag("loguniform")]
        | Annotated[RandInt, Tag("randint")],
        Discriminator(_tag),
        AfterValidator(_in_range(kind, ge=ge, gt=gt, le=le)),
    ]


# The upper limits are sanity bounds (an AdamW learning rate above 1 or 1000 epochs is a typo), in
# README's "Limits" table.
LearningRate = param(float, gt=0, le=1)
BatchSize = param(int, ge=1, le=MAX_BATCH)
Epochs = param(int, ge=1, le=1000)
TokenLength = param(int, ge=1, le=MAX_LENGTH)
Ratio = param(float, ge=0, le=1)
WeightDecay = param(float, ge=0, le=1)
Seed = param(int, ge=0, le=MAX_SEED)
DiceWeight = param(float, ge=0, le=100)  # segmentation: the Dice term's weight beside the cross-entropy
DecoderLrScale = param(float, gt=0, le=1000)  # segmentation: a multiple of learning_rate


class SearchSpace(Spec):
    """What each trial's fine-tuning uses: fixed values or distributions."""

    learning_rate: LearningRate = Field(
        default_factory=lambda: LogUniform(loguniform=[2e-5, 1e-4]), description="AdamW peak learning rate."
    )
    batch_size: BatchSize = Field(32, description="Rows per optimizer step.")
    epochs: Epochs = Field(2, description="Passes over the training rows.")
    warmup_ratio: Ratio = Field(0.1, description="Share of steps with a linearly rising learning rate.")
    weight_decay: WeightDecay = Field(0.01, description="AdamW weight decay (not on biases, LayerNorm).")
    max_length: TokenLength = Field(64, description="Tokens per text; tweets average ~33.")
    seed: Seed = Field(0, description="Seeds the model head's init and the data order.")
    dice_weight: DiceWeight = Field(
        0.0, description="Segmentation: weight of a soft Dice term added to the cross-entropy (0: none)."
    )
    decoder_lr_scale: DecoderLrScale = Field(
        1.0, description="Segmentation: the new decoder's learning rate as a multiple of learning_rate."
    )

    def kinds(self) -> dict[str, str]:
        """Parameter name -> "fixed" or its distribution's name."""
        return {name: kind_of(getattr(self, name)) for name in type(self).model_fields}


class TrialParams(SearchSpace):
    """One point of the search space: the hyperparameters one trial trains with.

    Built from Ray Tune's config where the trial starts (:meth:`of`), so every value that
    reaches a trial is checked against the same ranges as the spec's (SearchSpace's fields,
    their only home) and arrives typed: ``params.batch_size`` is an int, never a string or a
    numpy scalar.
    """

    @model_validator(mode="after")
    def _one_point(self):
        drawn = [name for name, kind in self.kinds().items() if kind != "fixed"]
        if drawn:
            raise ValueError(f"a trial takes one value per parameter; {', '.join(drawn)} are distributions")
        return self

    @classmethod
    def of(cls, config: dict) -> TrialParams:
        """A trial's params from Tune's ``config`` (numpy scalars, as some searchers draw them,
        become Python numbers first)."""
        return cls.model_validate({k: v.item() if hasattr(v, "item") else v for k, v in config.items()})


SearchAlg = Literal["random", "grid", "optuna"]


def check_search_alg(alg: str, space: SearchSpace) -> None:
    """Which distributions each search algorithm can use (raises ValueError)."""
    grids = [name for name, kind in space.kinds().items() if kind == "grid"]
    if alg == "grid" and not grids:
        raise ValueError(
            "search_alg grid needs at least one {grid: [...]} in search; the search space has none"
        )
    if alg == "optuna" and all(kind == "fixed" for kind in space.kinds().values()):
        raise ValueError("search_alg optuna needs at least one distribution in search to choose from")
    if alg in ("random", "optuna") and grids:
        what = "samples" if alg == "random" else "searches with TPE over"
        raise ValueError(
            f"search_alg {alg} {what} distributions, but search.{grids[0]} is a grid; use "
            "{choice: [...]} to sample it, or search_alg: grid to try every value"
        )
