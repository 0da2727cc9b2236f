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
from cluster.evaluation.baseline import EVALUATIONS, paired_with, resolve_baseline
from cluster.registry.artifacts import read_text
from cluster.registry.overwrites import require_outputs
from cluster.registry.predictions import run_predictions
from cluster.registry.record import Registry
from cluster.specs.workloads import GateSpec
from jobs.spec_cli import Workload, options, spec_command


def gate_run(registry: Registry, ref: str, gate: GateSpec) -> dict:
    """Judge the finished evaluation ``ref`` by ``gate``; record it as a ``gate`` run; return the result."""
    from cluster.stats.gates import judge

    run = registry.get_run(ref)
    if run["kind"] not in EVALUATIONS or run["status"] != "finished":
        raise UserError(f"run {run['id']} is a {run['status']} {run['kind']} run; gate a finished evaluation")
    require_outputs(registry, run, "its metrics")
    metrics = json.loads(read_text(join(run["artifact_path"], "metrics.json"), "metrics"))
    labels = metrics.get("labels")  # a translation run has none
    if labels is None and gate.baseline:
        raise UserError(
            f"run {run['id']} is a translation run: --max-drop compares classifiers row by row; "
            "compare translation runs with `evalctl compare RUN_A RUN_B --metric bleu`"
        )
    baseline = resolve_baseline(
        registry, gate.baseline, run["dataset_fingerprint"], run["dataset_path"], labels
    )
    if baseline:
        require_outputs(registry, baseline, "the baseline's predictions")
    spec = {"run": run["id"], **gate.model_dump(mode="json")}
    with registry.run(
        "gate",
        spec,
        dataset_path=run["dataset_path"],
        dataset_fingerprint=run["dataset_fingerprint"],
        model_id=run["model_id"],
    ) as gate_id:
        predictions = run_predictions(run["artifact_path"]).location
        paired = (
            paired_with(baseline, predictions, labels, gate, metrics.get("seed", 0), metrics.get("task"))
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
