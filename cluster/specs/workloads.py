"""One pydantic spec per workload: the only place a default, a range or a help text is written.

The CLI's options are generated from these fields (jobs/spec_cli.py), YAML files
(``--config``) are validated against them, and jobs are submitted as their JSON
(``python -m jobs.<name> --spec-json ...``). The registry records
``spec.model_dump(mode="json")``. Loading and the one-line errors: cluster/specs/parse.py;
the sweep's search space: cluster/specs/search_space.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from cluster.data.images import IMAGE_SIZE
from cluster.data.perturb import Perturbations
from cluster.specs.fields import (
    MAX_BATCH,
    MAX_BOOTSTRAP,
    MAX_CPUS,
    MAX_GPUS,
    MAX_LENGTH,
    MAX_SEED,
    MAX_WORKERS,
    OWNER_HELP,
    PRECISION_HELP,
    Bool,
    DataPath,
    Encoding,
    Metric,
    ModelArg,
    Name,
    OutPath,
    Precision,
    SliceMetric,
)
from cluster.specs.parse import PathField, Spec
from cluster.specs.search_space import (
    Float,
    Int,
    SearchAlg,
    SearchSpace,
    check_search_alg,
)
from cluster.specs.segmentation import Classes, check_task, default_metric
from cluster.specs.translation import (
    MaxChars,
    MaxNewTokens,
    NumBeams,
    ReferenceColumns,
    Seq2SeqSpec,
    SourceColumn,
    TargetColumn,
)
from cluster.stats.gates import consistent_gate, direction, parse_conditions
from cluster.stats.metrics import metric_mode, slice_metrics_allowed


class DataSpec(Spec):
    """Where labelled text lives and which columns to use."""

    path: DataPath = Field(description="Parquet/CSV/JSONL file, directory, glob or URI (s3://, gs://).")
    text_column: Name = Field("text", description="Column holding the text.")
    image_column: Name = Field(
        "image", description="Column holding the image (PNG/JPEG bytes, or a path or URI), for image models."
    )
    label_column: Name | None = Field("label", description="Column holding the class name.")
    id_column: Name | None = Field(None, description="Id column, copied into the predictions.")
    slice_column: Name | None = Field(None, description="Metrics per value of this column.")
    mask_column: Name = Field(
        "mask", description="Segmentation: column holding the mask, a PNG label map (value = class index)."
    )
    ignore_index: Int = Field(
        255, ge=0, le=255, description="Segmentation: mask value of an unlabelled pixel (not scored)."
    )
    encoding: Encoding = Field(
        "utf-8",
        description="Text encoding of CSV/JSONL files, e.g. latin-1 or cp1252 for some exports "
        "(a byte that does not decode is refused, naming it: never guessed).",
    )
    # Parallel corpora (translation models): cluster/specs/translation.py
    source_column: SourceColumn
    target_column: TargetColumn
    reference_columns: ReferenceColumns
    max_chars: MaxChars


class TextSpec(DataSpec):
    """Unlabelled text (pretraining): no label column unless one is named."""

    label_column: Name | None = Field(None, description="Not used for pretraining.")


Conditions = Annotated[dict[Metric, float], BeforeValidator(parse_conditions)]  # METRIC=VALUE ...


class GateSpec(Spec):
    """Conditions a run must meet (cluster/stats/gates.py; `evalctl gate`, evaluate, a sweep's `gate:`)."""

    min: Annotated[Conditions, AfterValidator(direction("min"))] = Field(
        default_factory=dict, description="METRIC=VALUE: the metric must be at least VALUE (repeatable)."
    )
    max: Annotated[Conditions, AfterValidator(direction("max"))] = Field(
        default_factory=dict, description="METRIC=VALUE: the metric must be at most VALUE (repeatable)."
    )
    use_ci_lower: Bool = Field(
        False,
        description="Judge by the pessimistic end of each 95% CI (lower for --min, upper for --max, "
        "of the paired difference for --max-drop), not the point value.",
    )
    baseline: str | None = Field(
        None, description="MODEL or evaluation RUN to compare with on the same data (for --max-drop)."
    )
    max_drop: Annotated[Conditions, AfterValidator(direction("max_drop"))] = Field(
        default_factory=dict,
        description="METRIC=POINTS: at most this drop against --baseline, in points (1.0 = 0.01).",
    )
    gate_bootstrap: Int = Field(
        1000, ge=1, le=MAX_BOOTSTRAP, description="Paired bootstrap replicates against the baseline."
    )
    _consistent = model_validator(mode="after")(consistent_gate)


class PipelineSpec(Spec):
    """How a workload runs a model over its data in the Ray Data pipeline (cluster/evaluation/
    pipeline.py); shared by the specs below."""

    batch_size: Int = Field(64, ge=1, le=MAX_BATCH, description="Rows per forward pass.")
    workers: Int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description="Model actors at most (default: one per GPU, else one per CPU; at most one per block).",
    )
    min_workers: Int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description="Model actors at least: Ray Data scales the pool between this and --workers "
        "(default: --workers, a fixed pool).",
    )
    gpus_per_worker: Float | None = Field(
        None, ge=0, le=MAX_GPUS, description="GPUs per actor (default: 1 when the cluster has GPUs, else 0)."
    )
    precision: Precision = Field("auto", description=PRECISION_HELP)
    max_length: Int = Field(
        128, ge=1, le=MAX_LENGTH, description="Tokens per text (longer texts are truncated)."
    )
    num_beams: NumBeams  # translation models (cluster/specs/translation.py)
    max_new_tokens: MaxNewTokens
    bootstrap: Int = Field(
        1000, ge=0, le=MAX_BOOTSTRAP, description="Poisson bootstrap replicates for the 95% CIs (0 = off)."
    )
    limit: Int | None = Field(None, ge=1, description="Evaluate only the first N rows.")
    rows_per_shard: Int = Field(
        1024,
        ge=1,
        description="Rows per block, the unit of parallel work and of a part file; a multiple of "
        "--sort-rows (images: fewer rows, so a decoded block stays under 64 MiB).",
    )
    sort_rows: Int = Field(
        1024,
        ge=1,
        description="Texts are length-sorted into batches within aligned groups of this many input rows "
        "(row // sort_rows), so a row's batch, and its probabilities to the last bit, are the same "
        "whatever the blocks, workers or nodes.",
    )
    seed: Int = Field(0, ge=0, le=MAX_SEED, description="Bootstrap seed.")
    skip_bad_rows: Bool = Field(
        False,
        description="Leave out images that cannot be decoded, or empty or over-long translation texts, "
        "counted and listed in metrics.json (default: the first one stops the run, naming its row).",
    )
    owner: str | None = Field(None, description=OWNER_HELP)
    overwrite: Bool = Field(False, description="Allow --out to hold an earlier run.")
    keep_warm_s: Float = Field(
        600.0,
        ge=0,
        le=7 * 86400,
        description="On a running Ray head or cluster: keep the model loaded for later evaluations "
        "until idle this many seconds (0 = unload when done). An embedded Ray ends with the command.",
    )

    @model_validator(mode="after")
    def _aligned_shards(self):
        if self.rows_per_shard % self.sort_rows:
            raise ValueError(
                f"rows_per_shard ({self.rows_per_shard}) must be a multiple of sort_rows ({self.sort_rows}): "
                "shards are cut only between sort groups, so no batch depends on the sharding"
            )
        return self


SLICE_CANDIDATES = "length bins, URL/mention/hashtag/number/negation, frequent words, --slice-column values"
MISTAKES_HELP = "Most confident mistakes per confused class pair in report.html, with token attributions."


class EvaluateSpec(PipelineSpec):
    """One sharded evaluation run (jobs/evaluate.py)."""

    model: ModelArg = Field("best", description="Model dir, registered id, alias (best, serving) or base.")
    data: DataSpec = Field(description="The labelled evaluation data.")
    out: OutPath = Field(None, description="Output dir (default: the run's artifact dir).")
    threshold: Bool = Field(
        True, description="ROC-AUC, average precision, top-2 accuracy, Brier score and their curves."
    )
    auto_slices: Bool = Field(False, description=f"Find weak slices: {SLICE_CANDIDATES}.")
    min_slice_size: Int = Field(50, ge=1, description="Rows a slice needs to be tested and reported.")
    slice_metric: SliceMetric = Field(
        "accuracy",
        description=f"Metric the weak slices are judged by ({', '.join(slice_metrics_allowed())}).",
    )
    mistakes: Int = Field(3, ge=0, le=20, description=MISTAKES_HELP)
    gate: GateSpec | None = Field(
        None, description="Quality gate checked on this run (exit 1 when it fails)."
    )

    @model_validator(mode="after")
    def _labelled(self):
        if not self.data.label_column:
            raise ValueError("evaluation needs a label column (data.label_column, --label-column)")
        return self


class RobustnessSpec(EvaluateSpec):
    """An evaluation plus perturbed copies of every row (jobs/robustness.py)."""

    perturb: Perturbations = Field(
        default_factory=lambda: ["typo", "case", "punct", "whitespace", "homoglyph"],
        description="Comma-separated perturbations: identity, typo, case, punct, whitespace, homoglyph.",
    )
    rate: Float = Field(0.1, ge=0, le=1, description="Probability that each character or word is perturbed.")
    seed: Int = Field(
        0, ge=0, le=MAX_SEED, description="Seeds the perturbations (per row) and the bootstrap."
    )


OptionalModel = Annotated[str | None, PathField("model")]
DRIFT_MODEL_HELP = "Classifier to compare predictions and embeddings of (default: base encoder's embeddings)."


class DriftSpec(PipelineSpec):
    """Domain shift between a reference and a current dataset (jobs/drift.py)."""

    reference: DataSpec = Field(description="The data the model is known to work on.")
    current: DataSpec = Field(description="The data to check against it.")
    model: OptionalModel = Field(None, description=DRIFT_MODEL_HELP)
    out: OutPath = Field(None, description="Output dir (default: the run's artifact dir).")
    embed_rows: Int = Field(2000, ge=10, description="Rows per side embedded for the domain classifier.")
    alpha: Float = Field(0.05, gt=0, lt=1, description="Significance level (Bonferroni over the checks).")


class SchedulerSpec(Spec):
    """Early stopping of weak trials."""

    kind: Literal["asha", "none"] = Field("asha", description="asha: stop weak trials early; none: run all.")
    grace_period: Int = Field(1, ge=1, le=10000, description="Validations before a trial can be stopped.")
    reduction_factor: Int = Field(
        2, ge=2, le=100, description="Keep the best 1/reduction_factor at each rung."
    )


class ResourcesSpec(Spec):
    """Resources per trial."""

    cpus: Float | None = Field(
        None,
        gt=0,
        le=MAX_CPUS,
        description="CPUs per trial (default: a node's CPUs / max_concurrent_trials; 1 with GPUs).",
    )
    gpus: Float | None = Field(
        None, ge=0, le=MAX_GPUS, description="GPUs per trial (default: 1 when the cluster has GPUs)."
    )


def _sample(split: str) -> DataSpec:
    return DataSpec(path=f"data/sample/{split}.parquet")


class SweepGateSpec(GateSpec):
    """A sweep's gate: its best model becomes ``best`` only if it passes (jobs/sweep.py)."""

    data: DataSpec | None = Field(
        None,
        description="Data the best model is evaluated on for the gate (default: the sweep's validation "
        "data, on which the trials were selected: an optimistic estimate).",
    )


class SweepSpec(Spec):
    """A Ray Tune fine-tuning sweep (jobs/sweep.py)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] | None = Field(
        None, description="Experiment name (default: sweep-<time>); resume with `evalctl sweep resume NAME`."
    )
    model: ModelArg = Field(
        "base",
        description="MODEL to fine-tune (base, efficientnet-lite0, a dir, an id or alias); "
        "a bare encoder or image backbone gets a new classification head.",
    )
    task: Literal["classification", "segmentation", "translation"] = Field(
        "classification",
        description="What the fine-tuned model does: classification (text or images, by MODEL), "
        "segmentation (a label per pixel) or translation (text to text).",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="pretrained: start from MODEL's weights; random: the same architecture randomly "
        "initialised (the baseline that shows what pretraining brings).",
    )
    image_size: Int = Field(
        IMAGE_SIZE, ge=32, le=1024, description="Input side in pixels of a new image model (image tasks only)"
    )
    translation: Seq2SeqSpec = Field(
        default_factory=Seq2SeqSpec,
        description="task: translation: the new decoder, target vocabulary, limits.",
    )
    classes: Classes | None = Field(
        None, description="Segmentation: class names of the mask values 0, 1, ... (comma-separated)."
    )
    train: DataSpec = Field(default_factory=lambda: _sample("train"), description="Training data.")
    validation: DataSpec = Field(
        default_factory=lambda: _sample("validation"), description="Validation data."
    )
    search: SearchSpace = Field(
        default_factory=SearchSpace, description="Hyperparameters: values or distributions."
    )
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="Early stopping.")
    search_alg: SearchAlg = Field(
        "random",
        description="random (sample), grid (every grid value) or optuna (TPE; sampled distributions only).",
    )
    num_samples: Int = Field(
        4, ge=1, le=10000, description="random/optuna: trials; grid: repeats of the whole grid."
    )
    max_concurrent_trials: Int | None = Field(
        None, ge=1, le=MAX_WORKERS, description="Trials at once (default: as many as the resources allow)."
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Resources per trial.")
    metric: Metric = Field(
        "f1_macro",
        description="Validation metric ranking trials and checkpoints (direction from the metric table; "
        "miou for task segmentation).",
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="Optional: must agree with the metric's direction (it is derived from the metric)."
    )
    precision: Precision = Field("auto", description=PRECISION_HELP)
    evals_per_epoch: Int = Field(
        2, ge=1, le=100, description="Validations per epoch (ASHA decides at each one)."
    )
    min_steps: Int = Field(
        0,
        ge=0,
        le=100_000,
        description="Optimizer steps each trial takes at least: on small data its epochs are raised to "
        "reach them (0 = the epochs as given; a budget far below a few hundred steps is warned about).",
    )
    max_train_rows: Int | None = Field(None, ge=1, description="Stratified subsample of the training rows.")
    max_validation_rows: Int | None = Field(
        None, ge=1, description="Stratified subsample of the validation rows."
    )
    storage_path: OutPath = Field(
        None, description="Local dir or URI for trials (default: EVALCLUSTER_HOME/sweeps)."
    )
    max_failures: Int = Field(
        2, ge=0, le=100, description="Retries of a failed trial, from its last checkpoint."
    )
    checkpoints_to_keep: Int = Field(
        1, ge=1, le=100, description="Checkpoints kept per trial, best by the metric."
    )
    seed: Int = Field(
        0, ge=0, le=MAX_SEED, description="Seeds the search: same spec and seed = same trial configurations."
    )
    owner: str | None = Field(None, description=OWNER_HELP)
    gate: SweepGateSpec | None = Field(
        None, description="Quality gate: `best` moves only if the best model passes."
    )

    _task_metric = model_validator(mode="before")(default_metric)

    @model_validator(mode="after")
    def _consistent(self):
        check_task(self)
        if self.mode is not None and self.mode != self.metric_mode:
            raise ValueError(
                f"mode {self.mode} disagrees with metric {self.metric}, which is "
                f"{'higher' if self.metric_mode == 'max' else 'lower'}-is-better; drop mode (it is derived)"
            )
        check_search_alg(self.search_alg, self.search)
        return self

    @property
    def metric_mode(self) -> str:
        """Ray Tune's mode for the metric: "max" when higher is better, else "min"."""
        return metric_mode(self.metric)
