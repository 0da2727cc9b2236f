"""Fine-tuning sweeps on Ray Tune: one trial = one fine-tuning run (cluster/tune/trial.py).

    evalctl sweep --config jobs/configs/sweep.yaml [--name NAME] [--num-samples N]
    python -m jobs.sweep resume NAME

Steps: the validated spec -> check data, labels, resources and storage -> Tuner.fit
(cluster/tune/setup.py: trials report validation metrics and checkpoints; ASHA stops
weak ones; failed trials retry from their last checkpoint) -> export the best
checkpoint as a model directory -> register it and point the alias ``best`` at it.

``best`` always names the best trial of the most recently *finished* sweep;
earlier sweeps' models stay registered under their ids (`evalctl models list`)
and can be re-promoted with `evalctl models alias best MODEL_ID`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import typer

from cluster.errors import UserError, first_items
from cluster.registry.record import Registry, new_id
from cluster.specs.parse import load_spec
from cluster.specs.workloads import SweepSpec
from cluster.tune.setup import InterruptWatch, SweepInterrupted
from jobs.spec_cli import Workload, options, spec_command

log = logging.getLogger(__name__)
SPEC_FILE = "evalcluster_sweep.json"  # in the experiment dir: what `sweep resume` needs (signing.py's)


# ------------------------------------------------------------------ orchestration


def run_sweep(spec: SweepSpec, registry: Registry | None = None, resume: bool = False) -> dict:
    """Run (or resume) a sweep; returns the best trial's summary and the registered model id."""
    from cluster.models.resolve import resolve_model
    from cluster.ray.runtime import init_ray
    from cluster.registry.artifacts import ArtifactStore
    from cluster.tune.callbacks import trials_progress
    from cluster.tune.export import export_best, write_report
    from cluster.tune.setup import make_tuner, trial_resources
    from cluster.tune.signing import KEY_FILE
    from cluster.tune.storage_probe import check_storage_on_every_node

    registry = registry or Registry()
    spec = spec.model_copy(update={"name": spec.name or new_id("sweep")})
    model = resolve_model(spec.model, registry)
    if spec.task == "translation":
        from cluster.tune.translation_trial import prepare_translation

        splits, labels = prepare_translation(spec, model), None
        fingerprint = splits.fingerprint
        say_budget(spec, len(splits.train))
    else:
        train, val, labels, fingerprint = load_splits(spec, model.modality, model.path)
        say_budget(spec, len(train.y))
        splits = (train, val)
    storage = storage_path(spec, registry)
    check_gate_baseline(spec, registry)  # a wrong baseline is an error now, not after the sweep
    ArtifactStore.from_env(registry.home).check_writable()  # the best model goes there: fail now
    run_kwargs = {
        "owner": spec.owner,
        "name": spec.name,
        "dataset_path": spec.train.path,
        "dataset_fingerprint": fingerprint,
        "model_id": model.model_id,
    }
    with registry.run("sweep", spec.model_dump(mode="json"), **run_kwargs) as run_id:
        init_ray()
        check_storage_on_every_node(storage)  # before any trial starts
        resources = trial_resources(spec)
        key = registry.home / KEY_FILE  # signs Tune's pickled state on storage (cluster/tune/signing.py)
        tuner = make_tuner(spec, storage, model.path, labels, splits, resources, resume, key)
        _write_spec_file(storage, spec, run_id, key)
        t0 = time.perf_counter()
        # trials ended of the total, written with the run's heartbeat (cluster/tune/callbacks.py)
        told = functools.partial(_trials_done, registry, run_id)
        with InterruptWatch() as watch, trials_progress(spec.name, told):
            results = tuner.fit()
        if watch.interrupted():
            raise SweepInterrupted(spec.name, results)  # recorded as failed; `best` stays where it was
        summary = export_best(spec, results, registry, run_id, model, labels)
        summary.update(promote_best(spec, summary["model_id"], registry))
        summary["wall_s"] = time.perf_counter() - t0
        summary["report"] = write_report(storage, spec, summary)
        registry.finish_run(
            run_id,
            metrics=summary,
            model_id=summary["model_id"],
            artifact_path=str(Path(storage) / spec.name),
        )
    summary["run_id"] = run_id
    return summary


def _trials_done(registry: Registry, run_id: str, done: int, total: int | None) -> None:
    registry.set_progress(run_id, done, total, "trials")


def resume_sweep(name: str, registry: Registry | None = None, storage: str | None = None) -> dict:
    """Finish an interrupted sweep (Tuner.restore): finished trials are not run again."""
    registry = registry or Registry()
    root = Path(storage or registry.home / "sweeps") / name
    if not (root / SPEC_FILE).is_file():
        known = sorted(p.name for p in root.parent.glob("*") if (p / SPEC_FILE).is_file())
        raise UserError(f'no sweep "{name}" under {root.parent}; known: {", ".join(known) or "none"}')
    from cluster.tune.signing import KEY_FILE
    from cluster.tune.state import check_signatures, saved_sweep

    key = registry.home / KEY_FILE  # signed as written, checked before anything is used or recorded
    saved = json.loads(saved_sweep(name, str(root), key))
    spec = load_spec(SweepSpec, saved["spec"], where=str(root / SPEC_FILE))
    check_signatures(spec, str(root), key)
    registry.fail_run(saved["run_id"], "interrupted; resumed by `evalctl sweep resume`")  # if still running
    return run_sweep(spec, registry, resume=True)


def say_budget(spec: SweepSpec, train_rows: int) -> None:
    """One line on stderr, before anything starts, when the trials' budget is small (the
    optimizer steps a trial takes: cluster/tune/search.py budget_note)."""
    from cluster.tune.search import budget_note
    from jobs.entry import err_console

    note = budget_note(spec, train_rows)
    if note:
        err_console.print(note, markup=False)


def check_gate_baseline(spec: SweepSpec, registry: Registry) -> None:
    """A gate's baseline must name a model, except ``best`` before the first sweep set it."""
    from cluster.models.resolve import resolve_model

    if spec.gate is None or spec.gate.baseline is None:
        return
    if spec.gate.baseline == "best" and registry.resolve_model("best") is None:
        return  # the first sweep: nothing to compare with yet (promote_best says so)
    resolve_model(spec.gate.baseline, registry)


def promote_best(spec: SweepSpec, model_id: str, registry: Registry) -> dict:
    """Point ``best`` at the new model, unless the sweep's gate fails; says why not."""
    moved = {"by": spec.owner, "via": "sweep", "note": f"sweep {spec.name}"}
    if spec.gate is None:
        registry.set_alias("best", model_id, **moved)
        return {"best_alias": f"best -> {model_id}"}
    from jobs.sweep_gate import gate_model

    gate = gate_model(spec, model_id, registry)
    if gate["passed"]:
        registry.set_alias("best", model_id, **{**moved, "note": f"sweep {spec.name}, gate passed"})
        return {"gate": gate, "best_alias": f"best -> {model_id} (gate passed)"}
    failed = "; ".join(c["line"].split("  ", 1)[1] for c in gate["conditions"] if not c["passed"])
    held = registry.resolve_model("best")
    kept = f"best stays {held['id']}" if held else "best stays unset"
    return {"gate": gate, "best_alias": f"{kept}: {model_id} failed the gate ({failed})"}


# ------------------------------------------------------------------ data and storage


def load_splits(spec: SweepSpec, modality: str = "text", model_path: Path | None = None):
    """Validated train/validation splits as Split objects, labels in sorted order, train fingerprint.

    Images stay encoded here (a fraction of their decoded size in the object store); each
    trial decodes them at its model's input size. Segmentation: cluster/train/segmentation_data.py."""
    import tempfile

    if spec.task == "segmentation":
        from cluster.train.segmentation_data import load_segmentation_splits

        return load_segmentation_splits(spec, modality, model_path)

    from cluster.data.scan import image_folder_spec

    with tempfile.TemporaryDirectory(prefix="evalcluster-") as work:  # image folder trees' indexes
        train = image_folder_spec(spec.train, modality, Path(work) / "train")
        validation = image_folder_spec(spec.validation, modality, Path(work) / "validation")
        return _read_splits(spec.model_copy(update={"train": train, "validation": validation}), modality)


def _read_splits(spec: SweepSpec, modality: str):
    from cluster.data.scan import read_pandas, scan
    from cluster.train.loop import Split

    st, sv = scan(spec.train, modality=modality), scan(spec.validation, modality=modality)
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
        df = _stratified_head(read_pandas(data, modality=modality), cap, spec.seed)
        splits.append(Split(df[modality].tolist(), df["label"].map(index).to_numpy(np.int64)))
    return splits[0], splits[1], labels, st.fingerprint


def _stratified_head(df, cap: int | None, seed: int):
    if cap is None or cap >= len(df):
        return df
    from sklearn.model_selection import train_test_split

    part, _ = train_test_split(df, train_size=cap, stratify=df["label"], random_state=seed)
    return part


def storage_path(spec: SweepSpec, registry: Registry) -> str:
    """Where Tune keeps trials and checkpoints; must be writable (checked now, not mid-sweep)."""
    from cluster.data.storage import resolve

    path = spec.storage_path or str(registry.home / "sweeps")
    fs, root = resolve(path)
    try:
        fs.create_dir(root, recursive=True)
        probe = f"{root}/.write-probe-{new_id('p')}"
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except (OSError, ValueError) as exc:
        raise UserError(f"storage path {path} cannot be written: {str(exc).splitlines()[0]}") from exc
    return path if "://" in path else root


def _write_spec_file(storage: str, spec: SweepSpec, run_id: str, key: Path) -> None:
    from cluster.tune.signing import signed_filesystem

    fs, root = signed_filesystem(f"{storage.rstrip('/')}/{spec.name}", key)  # signed: resume checks it
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{SPEC_FILE}") as f:
        f.write(json.dumps({"spec": spec.model_dump(mode="json"), "run_id": run_id}, indent=2).encode())


# ------------------------------------------------------------------ command line

sweep_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    help="Fine-tuning sweeps on Ray Tune.",
)


def _run(spec: SweepSpec, address: str | None = None, **_) -> None:
    from cluster.ray.runtime import init_ray

    if address:  # a Ray address (HOST:6379, ray://...): join that cluster (job-server URLs submit)
        init_ray(address)
    print_summary(run_sweep(spec))


WORKLOAD = Workload(
    spec=SweepSpec,
    options=options(SweepSpec, ["*"], flags={}),
    run=_run,
    module="jobs.sweep",
)
command = sweep_app.callback()(
    spec_command(WORKLOAD, "Run a sweep from a YAML spec; prints the best trial and the registered model id.")
)


@sweep_app.command("resume")
def resume_command(
    name: str = typer.Argument(..., help="The interrupted sweep's name."),
    storage: str | None = typer.Option(None, help="Its storage path, if not the default."),
) -> None:
    """Continue an interrupted sweep; finished trials are not run again."""
    print_summary(resume_sweep(name, storage=storage))


@sweep_app.command("report")
def report_command(
    runs: list[str] = typer.Argument(..., help="Sweep run ids (e.g. one with init: pretrained, one random)."),
    out: Path = typer.Option(Path("sweep_report.html"), help="The HTML file to write."),
) -> None:
    """Learning curves of several sweeps in one figure (pretrained vs random init)."""
    from cluster.report.sweep import write_sweep_report
    from jobs.entry import console

    registry = Registry()
    summaries = []
    for ref in runs:
        run = registry.get_run(ref)
        if run["kind"] != "sweep" or not (run.get("metrics") or {}).get("curves"):
            raise UserError(f"run {ref} is not a finished sweep with learning curves")
        summaries.append({**run["metrics"], "run_id": run["id"]})
    console.print(f"wrote {write_sweep_report(summaries, out)}")


def print_summary(summary: dict) -> None:
    from jobs.entry import console

    v = summary["validation"]
    console.print(f"best trial {summary['best_trial']}: {summary['best_config']}")
    # the sweep's metric first, then the task's usual ones (translation's, or classification's)
    usual = ("bleu", "chrf", "ter", "accuracy", "f1_macro")
    shown = [m for m in dict.fromkeys([summary.get("metric"), *usual]) if m in v]
    console.print(
        f"validation {', '.join(f'{m} {v[m]:.4f}' for m in shown) or f'accuracy {math.nan}'}"
        f" ({summary['trials']} trials, {summary['trial_epochs']:.1f} trial-epochs, "
        f"{summary['wall_s']:.0f}s)"
    )
    for line in summary.get("damaged_checkpoints", []):  # work a restart lost: never silent
        console.print(f"warning: {line}", markup=False)
    if "gate" in summary:
        g = summary["gate"]
        console.print(
            f"gate on {g['data']} (evaluation {g['evaluation_run']})"
            + (f": {g['note']}" if g["note"] else ""),
            markup=False,
        )
        for row in g["conditions"]:
            console.print(row["line"], markup=False)
    console.print(
        f"registered model {summary['model_id']}; {summary['best_alias']}; run {summary['run_id']}",
        markup=False,
    )
    if summary.get("report"):
        console.print(f"learning curves: {summary['report']}", markup=False)


if __name__ == "__main__":
    from jobs.entry import run

    run(sweep_app, prog="python -m jobs.sweep")
