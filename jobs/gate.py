"""Quality gates on evaluation runs: what CI pipelines call.

    evalctl gate RUN --min f1_macro=0.75 --max ece=0.08 [--use-ci-lower]
                     [--baseline MODEL_OR_RUN --max-drop f1_macro=1.0] [--json]

Prints one line per condition (value, CI, verdict) and exits 0 when every condition
holds, 1 when one does not, 2 on bad input (nothing registered). The conditions and
their judgement are cluster/stats/gates.py; this module finds the runs: the gated run, and
the baseline's evaluation on the same data (an evaluation run, or a model's latest
finished evaluation with the same dataset fingerprint), compared with it row by row
(cluster/stats/compare.py: paired bootstrap + McNemar). Each gate is recorded in the
registry as a ``gate`` run (spec, verdicts, gate.json in its artifact dir).
The same gate runs inside `evalctl evaluate --min ...` and a sweep's ``gate:``.
"""

from __future__ import annotations

import inspect
import json

import typer

from cluster.data.storage import join
from cluster.errors import UserError
from cluster.registry.artifacts import read_text
from cluster.registry.record import Registry
from cluster.specs.workloads import GateSpec
from jobs.spec_cli import Workload, options, spec_command

EVALUATIONS = ("evaluate", "robustness")  # run kinds with metrics.json and predictions.parquet


def resolve_baseline(
    registry: Registry, ref: str | None, fingerprint: str, data_path: str, labels: list[str] | None = None
) -> dict | None:
    """The baseline's finished evaluation of the data with this ``fingerprint`` (an evaluation run,
    or a model's latest one), or None without ``ref``. A run on other data is refused."""
    if ref is None:
        return None
    run = _run_or_none(registry, ref)
    if run is None:
        run = _latest_evaluation(registry, ref, fingerprint, data_path)
    elif run["kind"] not in EVALUATIONS or run["status"] != "finished":
        raise UserError(
            f"baseline {run['id']} is a {run['status']} {run['kind']} run; give a finished evaluation"
        )
    elif run["dataset_fingerprint"] != fingerprint:
        raise UserError(
            f"baseline {run['id']} evaluated other data (dataset {run['dataset_fingerprint']}, "
            f"{run['dataset_path']}) than the gated run (dataset {fingerprint}, {data_path}); "
            "a gate compares on the same rows"
        )
    have = (run.get("metrics") or {}).get("labels")
    if labels is not None and have is not None and have != labels:
        raise UserError(f"baseline {run['id']} predicts {have}, the gated model {labels}")
    return run


def _run_or_none(registry: Registry, ref: str) -> dict | None:
    try:
        return registry.get_run(ref)
    except UserError:
        return None


def _latest_evaluation(registry: Registry, ref: str, fingerprint: str, data_path: str) -> dict:
    from cluster.models.resolve import resolve_model

    try:
        model = resolve_model(ref, registry)
    except UserError as exc:
        raise UserError(f'baseline "{ref}" is neither an evaluation run nor a model: {exc}') from exc
    runs = registry.list_runs(kind="evaluate", status="finished", dataset_fingerprint=fingerprint)
    mine = [r for r in runs if r["model_id"] == model.model_id]
    if not mine:
        raise UserError(
            f"baseline model {model.model_id} has no finished evaluation on this data (dataset "
            f"{fingerprint}); evaluate it first: evalctl evaluate --model {ref} --data {data_path}"
        )
    return mine[0]  # newest first


def paired_with(
    baseline: dict,
    predictions: str,
    labels: list[str],
    gate: GateSpec,
    seed: int = 0,
    task: str = "classification",
) -> dict:
    """The gated run's predictions (a path or URI) against the baseline's, row by row (baseline = A,
    run = B); both stream from wherever they are kept (a directory, or the artifact store).
    Segmentation: paired over images, with the Wilcoxon test (cluster/stats/segmentation_compare.py)."""
    from cluster.registry.predictions import open_predictions, run_predictions
    from cluster.stats.compare import compare_predictions, mcnemar_exact

    base = run_predictions(baseline["artifact_path"])
    if task == "segmentation":
        from cluster.stats.segmentation_compare import compare_sources

        seg = compare_sources(
            base, open_predictions(str(predictions)), labels, "miou", gate.gate_bootstrap, seed
        )
        p = seg["wilcoxon"]["p_value"]
        found = {"n": seg["n"], "metrics": seg["metrics"], "p_value": p, "test": "Wilcoxon"}
        return {"baseline": baseline["id"], "baseline_model": baseline["model_id"], **found}
    counts, diffs = compare_predictions(
        base, open_predictions(str(predictions)), labels, gate.gate_bootstrap, seed
    )
    return {
        "baseline": baseline["id"],
        "baseline_model": baseline["model_id"],
        "n": int(counts.cm_a.sum()),
        "metrics": diffs,
        "mcnemar_p": mcnemar_exact(counts.b, counts.c),
    }


def gate_run(registry: Registry, ref: str, gate: GateSpec) -> dict:
    """Judge the finished evaluation ``ref`` by ``gate``; record it as a ``gate`` run; return the result."""
    from cluster.stats.gates import judge

    run = registry.get_run(ref)
    if run["kind"] not in EVALUATIONS or run["status"] != "finished":
        raise UserError(f"run {run['id']} is a {run['status']} {run['kind']} run; gate a finished evaluation")
    metrics = json.loads(read_text(join(run["artifact_path"], "metrics.json"), "metrics"))
    baseline = resolve_baseline(
        registry, gate.baseline, run["dataset_fingerprint"], run["dataset_path"], metrics["labels"]
    )
    spec = {"run": run["id"], **gate.model_dump(mode="json")}
    with registry.run(
        "gate",
        spec,
        dataset_path=run["dataset_path"],
        dataset_fingerprint=run["dataset_fingerprint"],
        model_id=run["model_id"],
    ) as gate_id:
        predictions = join(run["artifact_path"], "predictions.parquet")
        paired = (
            paired_with(
                baseline, predictions, metrics["labels"], gate, metrics.get("seed", 0), metrics.get("task")
            )
            if baseline
            else None
        )
        result = {"run": run["id"], "model": run["model_id"], **judge(gate, metrics, paired)}
        out = registry.run_dir(gate_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gate.json").write_text(json.dumps(result, indent=2))
        registry.finish_run(gate_id, metrics=result, artifact_path=str(out))
    return {"gate_run": gate_id, **result}


# ------------------------------------------------------------------ command line


def _show(spec: GateSpec, run: str, as_json: bool = False, **_) -> None:
    from jobs.entry import console
    from jobs.eval_print import print_gate

    result = gate_run(Registry(), run, spec)
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(
            f"gate on {result['run']} (model {result['model']}); recorded as {result['gate_run']}",
            markup=False,
        )
        print_gate(result)
    if not result["passed"]:
        raise typer.Exit(1)


def _job_argv(spec: GateSpec, extras: dict) -> tuple[list[str], dict[str, str]]:
    return [extras["run"], *(["--json"] if extras.get("as_json") else [])], {}


command = spec_command(
    Workload(
        spec=GateSpec,
        options=options(GateSpec, ["*"], flags={"gate_bootstrap": "--bootstrap"}),
        run=_show,
        module="jobs.gate",
        job_extras=_job_argv,
        extras=[
            inspect.Parameter(
                "run",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Argument(..., help="Evaluation run id (or unique prefix) to gate."),
                annotation=str,
            ),
            inspect.Parameter(
                "as_json",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(False, "--json"),
                annotation=bool,
            ),
        ],
    ),
    "Check an evaluation against quality conditions: exit 0 when all hold, 1 when one fails.",
)


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.gate")
