"""Fine-tuning sweeps on Ray Tune: one trial = one fine-tuning run of jobs/train_loop.py.

    python -m jobs.sweep --config jobs/configs/sweep.yaml [--name NAME] [--num-samples N]
    python -m jobs.sweep resume NAME

Steps: load the spec -> check data, labels, resources and storage -> Tuner.fit
(trials report validation metrics and checkpoints; ASHA stops weak ones; failed
trials retry from their last checkpoint) -> export the best checkpoint as a model
directory -> register it and point the alias ``best`` at it.

``best`` always names the best trial of the most recently *finished* sweep;
earlier sweeps' models stay registered under their ids (`evalctl models list`)
and can be re-promoted with `evalctl models alias best MODEL_ID`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import typer

from cluster.config import DISTRIBUTIONS, SweepSpec, from_dict, load_yaml
from cluster.errors import UserError, first_items
from cluster.registry import Registry, new_id

SPEC_FILE = "evalcluster_sweep.json"  # in the experiment dir: what `sweep resume` needs


# ------------------------------------------------------------------ the trial


def train_trial(
    config: dict, *, train, val, model_path: str, labels: list[str], precision: str, evals_per_epoch: int
) -> None:
    """Ray Tune function trainable: fine-tune with ``config``; resume from tune.get_checkpoint()."""
    import torch
    from ray import tune

    from cluster.modeling import load_classifier, pick_device, resolve_precision
    from cluster.runtime import worker_threads
    from jobs.train_loop import fine_tune, make_optimizer, steps_per_epoch

    torch.set_num_threads(worker_threads())
    device = pick_device()
    precision = resolve_precision(precision, device)
    checkpoint = tune.get_checkpoint()
    ckpt_dir = Path(checkpoint.to_directory()) if checkpoint else None
    model, tokenizer, _ = load_classifier(
        ckpt_dir / "model" if ckpt_dir else model_path, labels=labels, seed=int(config["seed"]), device=device
    )
    total = steps_per_epoch(len(train.texts), int(config["batch_size"])) * int(config["epochs"])
    optimizer, scheduler = make_optimizer(model, config, total)
    start_step = _restore(ckpt_dir, optimizer, scheduler) if ckpt_dir else 0

    def report(metrics: dict, step: int) -> None:
        with tempfile.TemporaryDirectory() as d:
            _save(Path(d), model, tokenizer, optimizer, scheduler, step)
            tune.report({**metrics, "precision": precision}, checkpoint=tune.Checkpoint.from_directory(d))

    fine_tune(
        model,
        tokenizer,
        optimizer,
        scheduler,
        train,
        val,
        config,
        labels=labels,
        precision=precision,
        evals_per_epoch=evals_per_epoch,
        start_step=start_step,
        report=report,
    )


def _save(d: Path, model, tokenizer, optimizer, scheduler, step: int) -> None:
    """Checkpoint = model (safetensors) + optimizer, scheduler, step and every RNG state
    (safetensors + JSON: cluster/checkpoint.py; nothing in a checkpoint is ever unpickled)."""
    from cluster.checkpoint import save_trainer_state

    model.save_pretrained(d / "model", safe_serialization=True)
    tokenizer.save_pretrained(d / "model")
    save_trainer_state(d, optimizer, scheduler, step)


def _restore(d: Path, optimizer, scheduler) -> int:
    """Optimizer, scheduler and RNG states from checkpoint ``d``; the step to resume at."""
    from cluster.checkpoint import load_trainer_state

    return load_trainer_state(d, optimizer, scheduler)


# ------------------------------------------------------------------ orchestration


def run_sweep(spec: SweepSpec, registry: Registry | None = None, resume: bool = False) -> dict:
    """Run (or resume) a sweep; returns the best trial's summary and the registered model id."""
    from cluster.modeling import resolve_model
    from cluster.runtime import init_ray

    registry = registry or Registry()
    spec.name = spec.name or new_id("sweep")
    check_spec(spec)
    model = resolve_model(spec.model, registry)
    train, val, labels, fingerprint = load_splits(spec)
    storage = storage_path(spec, registry)
    run_kwargs = {
        "owner": spec.owner,
        "name": spec.name,
        "dataset_path": spec.train.path,
        "dataset_fingerprint": fingerprint,
        "model_id": model.model_id,
    }
    with registry.run("sweep", asdict(spec), **run_kwargs) as run_id:
        init_ray()
        cpus, gpus = trial_resources(spec)
        tuner = make_tuner(spec, storage, model.path, labels, train, val, cpus, gpus, resume)
        _write_spec_file(storage, spec, run_id)
        t0 = time.perf_counter()
        results = tuner.fit()
        summary = export_best(spec, results, registry, run_id, model, labels)
        summary["wall_s"] = time.perf_counter() - t0
        registry.finish_run(
            run_id,
            metrics=summary,
            model_id=summary["model_id"],
            artifact_path=str(Path(storage) / spec.name),
        )
    summary["run_id"] = run_id
    return summary


def resume_sweep(name: str, registry: Registry | None = None, storage: str | None = None) -> dict:
    """Finish an interrupted sweep (Tuner.restore): finished trials are not run again."""
    registry = registry or Registry()
    root = Path(storage or registry.home / "sweeps") / name
    if not (root / SPEC_FILE).is_file():
        known = sorted(p.name for p in root.parent.glob("*") if (p / SPEC_FILE).is_file())
        raise UserError(f'no sweep "{name}" under {root.parent}; known: {", ".join(known) or "none"}')
    saved = json.loads((root / SPEC_FILE).read_text())
    spec = from_dict(SweepSpec, saved["spec"], where=str(root / SPEC_FILE))
    registry.fail_run(saved["run_id"], "interrupted; resumed by `evalctl sweep resume`")  # if still running
    return run_sweep(spec, registry, resume=True)


def make_tuner(
    spec: SweepSpec,
    storage: str,
    model_path: Path,
    labels: list[str],
    train,
    val,
    cpus: float,
    gpus: float,
    resume: bool,
):
    """The Tuner: function trainable with its data in the object store, ASHA, checkpoints, retries."""
    import os

    from ray import tune

    # Checkpointing at every validation is the point; Tune's "excessive sync" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = make_trainable(
        train, val, model_path, labels, spec.precision, spec.evals_per_epoch, cpus, gpus
    )
    path = f"{storage.rstrip('/')}/{spec.name}"
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=spec.checkpoints_to_keep,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.mode,
        ),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    return tune.Tuner(
        trainable, param_space=param_space(spec), run_config=run_config, tune_config=tune_config(spec)
    )


def make_trainable(
    train, val, model_path, labels, precision: str, evals_per_epoch: int, cpus: float, gpus: float
):
    """train_trial with its data in the object store and its resources attached."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(
            train_trial,
            train=train,
            val=val,
            model_path=str(model_path),
            labels=labels,
            precision=precision,
            evals_per_epoch=evals_per_epoch,
        ),
        {"cpu": cpus, "gpu": gpus},
    )


def param_space(spec: SweepSpec) -> dict:
    """The YAML search space as Ray Tune's sample/grid objects."""
    from ray import tune

    makers = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    space = {}
    for name, value in asdict(spec.search).items():
        if isinstance(value, dict):
            ((kind, args),) = value.items()
            space[name] = makers[kind](args)
        else:
            space[name] = value
    return space


def tune_config(spec: SweepSpec):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    scheduler = FIFOScheduler()
    if spec.scheduler.kind == "asha":
        max_t = max(_values(spec.search.epochs)) * spec.evals_per_epoch  # validations of the longest trial
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=int(max_t),
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent_trials,
        scheduler=scheduler,
        search_alg=BasicVariantGenerator(random_state=spec.seed),
    )


def export_best(spec: SweepSpec, results, registry: Registry, run_id: str, model, labels) -> dict:
    """Best checkpoint -> model directory in the registry, alias ``best``."""
    from cluster.modeling import load_classifier, save_model_dir

    ok = [r for r in results if r.metrics and spec.metric in r.metrics]
    if not ok:
        raise RuntimeError(f"no trial reported {spec.metric}; first error: {results.errors[:1]}")
    best = results.get_best_result(spec.metric, spec.mode, scope="all")
    checkpoint = best.get_best_checkpoint(spec.metric, spec.mode)
    best_metrics = _best_row(best, spec)
    model_id = new_id("m")
    lineage = {
        "base_model": model.model_id,
        "sweep_run": run_id,
        "sweep": spec.name,
        "trial_id": best.metrics.get("trial_id"),
        "trial_config": best.config,
        "validation_metrics": best_metrics,
        "validation_data": spec.validation.path,
        "train_data": spec.train.path,
        "labels": labels,
    }
    with checkpoint.as_directory() as d:
        m, tok, _ = load_classifier(Path(d) / "model", labels=labels)
        path = save_model_dir(m, tok, registry.model_dir(model_id), lineage)
    registry.register_model(
        path,
        run_id=run_id,
        base_model=model.model_id,
        lineage=lineage,
        metrics=best_metrics,
        model_id=model_id,
    )
    registry.set_alias("best", model_id)
    trial_epochs = sum(float(r.metrics.get("epoch", 0)) for r in results if r.metrics)
    details = [
        {
            "trial_id": r.metrics.get("trial_id"),
            "config": r.config,
            "epochs": r.metrics.get("epoch"),
            "resumed_from_steps": sorted(
                {int(x) for x in r.metrics_dataframe.get("start_step", []) if x > 0}
            ),
        }
        for r in results
        if r.metrics
    ]
    return {
        "model_id": model_id,
        "best_trial": best.metrics.get("trial_id"),
        "best_config": best.config,
        spec.metric: best_metrics[spec.metric],
        "validation": best_metrics,
        "trials": len(results),
        "errored_trials": len(results.errors),
        "trial_epochs": trial_epochs,
        "trial_details": details,
    }


def _best_row(result, spec: SweepSpec) -> dict:
    """The validation row of the trial's best checkpoint (not just its last report)."""
    df = result.metrics_dataframe
    row = df.loc[df[spec.metric].idxmax() if spec.mode == "max" else df[spec.metric].idxmin()]
    keep = (
        "accuracy",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "f1_weighted",
        "log_loss",
        "ece",
        "epoch",
        "step",
    )
    return {k: float(row[k]) for k in keep if k in row}


# ------------------------------------------------------------------ checks at the boundary


def check_spec(spec: SweepSpec) -> None:
    """Distributions well formed, grid non-empty, numbers in range."""
    has_grid = False
    for name, value in asdict(spec.search).items():
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
                raise UserError(f"search.{name}: give one of {', '.join(DISTRIBUTIONS)}, got {value}")
            ((kind, args),) = value.items()
            if not args:
                raise UserError(f"search.{name}.{kind}: empty list")
            if kind in ("uniform", "loguniform", "randint") and len(args) != 2:
                raise UserError(f"search.{name}.{kind}: give [low, high], got {args}")
            has_grid |= kind == "grid"
    if spec.search_alg == "grid" and not has_grid:
        raise UserError(
            "search_alg grid needs at least one {grid: [...]} in search; the search space is empty"
        )
    for name in ("num_samples", "evals_per_epoch", "checkpoints_to_keep"):
        if getattr(spec, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(spec, name)}")
    if spec.max_failures < 0:
        raise UserError(f"max_failures must be 0 or more, got {spec.max_failures}")


def load_splits(spec: SweepSpec):
    """Validated train/validation splits as Split objects, labels in sorted order, train fingerprint."""
    from cluster.data import read_pandas, scan
    from jobs.train_loop import Split

    st, sv = scan(spec.train), scan(spec.validation)
    missing = {lab: n for lab, n in sv.label_counts.items() if lab not in st.label_counts}
    if missing:
        raise UserError(
            f"labels in validation missing from training: "
            f"{first_items(f'{k!r} ({n} rows)' for k, n in missing.items())}"
        )
    labels = sorted(st.label_counts)
    index = {lab: i for i, lab in enumerate(labels)}
    splits = []
    for data, cap in ((spec.train, spec.max_train_rows), (spec.validation, spec.max_validation_rows)):
        df = _stratified_head(read_pandas(data), cap, spec.seed)
        splits.append(Split(df["text"].tolist(), df["label"].map(index).to_numpy(np.int64)))
    return splits[0], splits[1], labels, st.fingerprint


def _stratified_head(df, cap: int | None, seed: int):
    if cap is None or cap >= len(df):
        return df
    from sklearn.model_selection import train_test_split

    part, _ = train_test_split(df, train_size=cap, stratify=df["label"], random_state=seed)
    return part


def storage_path(spec: SweepSpec, registry: Registry) -> str:
    """Where Tune keeps trials and checkpoints; must be writable (checked now, not mid-sweep)."""
    import pyarrow.fs as pafs

    path = spec.storage_path or str(registry.home / "sweeps")
    try:
        fs, root = (
            pafs.FileSystem.from_uri(path)
            if "://" in path
            else (pafs.LocalFileSystem(), str(Path(path).absolute()))
        )
        fs.create_dir(root, recursive=True)
        probe = f"{root}/.write-probe-{new_id('p')}"
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except (OSError, ValueError) as exc:
        raise UserError(f"storage path {path} cannot be written: {str(exc).splitlines()[0]}") from None
    return path if "://" in path else root


def trial_resources(spec: SweepSpec) -> tuple[float, float]:
    """(CPUs, GPUs) per trial; auto = one GPU per trial on GPU clusters. Fails before starting
    when no node could ever hold a trial (Tune would wait forever)."""
    import ray

    from cluster.runtime import max_gpus_per_node

    res = ray.cluster_resources()
    gpus = spec.resources.gpus if spec.resources.gpus is not None else (1.0 if res.get("GPU") else 0.0)
    if gpus > max_gpus_per_node():
        raise UserError(
            f"resources.gpus = {gpus:g} per trial, but no node has more than {max_gpus_per_node():g} GPUs"
        )
    max_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    cpus = spec.resources.cpus or (
        1.0 if gpus else float(max(1, max_cpus // (spec.max_concurrent_trials or 1)))
    )
    if cpus > max_cpus:
        raise UserError(f"resources.cpus = {cpus:g} per trial, but no node has more than {max_cpus:g} CPUs")
    return float(cpus), float(gpus)


def _values(param) -> list:
    if isinstance(param, dict):
        ((kind, args),) = param.items()
        return list(range(args[0], args[1])) if kind == "randint" else list(args)
    return [param]


def _write_spec_file(storage: str, spec: SweepSpec, run_id: str) -> None:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage) if "://" in storage else (pafs.LocalFileSystem(), storage)
    fs.create_dir(f"{root}/{spec.name}", recursive=True)
    with fs.open_output_stream(f"{root}/{spec.name}/{SPEC_FILE}") as f:
        f.write(json.dumps({"spec": asdict(spec), "run_id": run_id}, indent=2).encode())


# ------------------------------------------------------------------ command line

sweep_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    help="Fine-tuning sweeps on Ray Tune.",
)


@sweep_app.callback()
def command(
    ctx: typer.Context,
    config: Path = typer.Option(Path("jobs/configs/sweep.yaml"), help="Sweep spec (YAML)."),
    name: str | None = typer.Option(None, help="Experiment name (for `sweep resume NAME`)."),
    num_samples: int | None = typer.Option(None, help="Override num_samples."),
    max_train_rows: int | None = typer.Option(None, help="Override max_train_rows."),
    owner: str | None = typer.Option(None, help="Recorded owner (default: OS user)."),
    address: str | None = typer.Option(None, help="http://HEAD:8265 submits a Ray job (or RAY_ADDRESS)."),
    wait: bool = typer.Option(False, help="With --address: stream logs, exit with the job's outcome."),
) -> None:
    """Run a sweep from a YAML spec; prints the best trial and the registered model id."""
    from jobs.submit import own_argv, submit_if_remote

    if ctx.invoked_subcommand is not None:
        return
    if submit_if_remote("jobs.sweep", own_argv("sweep"), address, wait, [str(config)]):
        return
    spec = load_yaml(config, SweepSpec)
    spec.name = name or spec.name
    spec.owner = owner or spec.owner
    if num_samples is not None:
        spec.num_samples = num_samples
    if max_train_rows is not None:
        spec.max_train_rows = max_train_rows
    print_summary(run_sweep(spec))


@sweep_app.command("resume")
def resume_command(
    name: str = typer.Argument(..., help="The interrupted sweep's name."),
    storage: str | None = typer.Option(None, help="Its storage path, if not the default."),
) -> None:
    """Continue an interrupted sweep; finished trials are not run again."""
    print_summary(resume_sweep(name, storage=storage))


def print_summary(summary: dict) -> None:
    from jobs.entry import console

    v = summary["validation"]
    console.print(f"best trial {summary['best_trial']}: {summary['best_config']}")
    console.print(
        f"validation accuracy {v.get('accuracy', math.nan):.4f}, f1_macro {v.get('f1_macro', math.nan):.4f}"
        f" ({summary['trials']} trials, {summary['trial_epochs']:.1f} trial-epochs, "
        f"{summary['wall_s']:.0f}s)"
    )
    console.print(f"registered model {summary['model_id']} (alias best); run {summary['run_id']}")


if __name__ == "__main__":
    from jobs.entry import run

    run(sweep_app, prog="python -m jobs.sweep")
