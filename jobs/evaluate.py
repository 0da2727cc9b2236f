"""`evalctl evaluate` and its Ray job entrypoint: parse, build the spec, call the plain function.

    python -m jobs.evaluate --model best --data data/sample/test.parquet --out out/eval
    evalctl evaluate --config jobs/configs/evaluate.yaml --limit 100
    evalctl evaluate --resume RUN        (a run whose driver died: continued, not started again)

The evaluation itself is cluster/evaluation/run.py (run_evaluate, resume_evaluate): a Ray Data
pipeline whose workers write the predictions and whose statistics the driver adds up.
"""

from __future__ import annotations

from cluster.clock import Phases, process_age_s
from cluster.evaluation.run import EvalResult
from cluster.specs.workloads import EvaluateSpec
from jobs.spec_cli import Workload, options, spec_command


def command_phases() -> Phases:
    """The command's marks so far: process start -> here (interpreter, imports, option parsing)."""
    phases = Phases()
    age = process_age_s()
    if age is not None:
        phases.marks["cli_start_s"] = round(age, 3)
    return phases


def _run(spec: EvaluateSpec, address: str | None = None, **_) -> None:  # address: HOST:6379, ray://
    from cluster.evaluation.run import run_evaluate

    report(run_evaluate(spec, phases=command_phases(), address=address))


def _resume(run: str, address: str | None = None) -> None:
    from cluster.evaluation.run import resume_evaluate

    report(resume_evaluate(run, phases=command_phases(), address=address))


def report(result: EvalResult) -> None:
    """The summary (jobs/eval_print.py); exit code 1 when the run's gate failed."""
    import typer

    from jobs.eval_print import print_summary

    print_summary(result)
    if "gate" in result.metrics and not result.metrics["gate"]["passed"]:
        raise typer.Exit(1)


GATE_OPTIONS = ["gate.min", "gate.max", "gate.use_ci_lower", "gate.baseline", "gate.max_drop"]
WORKLOAD = Workload(
    spec=EvaluateSpec,
    options=options(EvaluateSpec, ["model", "data.*", "*", *GATE_OPTIONS], flags={"data.path": "--data"}),
    run=_run,
    module="jobs.evaluate",
    resume=_resume,
)
command = spec_command(
    WORKLOAD,
    "Evaluation on Ray Data: metrics.json, the predictions (part files), report.html; registers the "
    "run. With --min/--max/--max-drop it also checks a quality gate (exit code 1 when it fails); "
    "--resume RUN continues a run whose driver died.",
)


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.evaluate")
