"""Robustness to perturbed input: one evaluation, every row also scored perturbed, paired statistics.

    evalctl robustness --model M --data D --perturb typo,case,punct,whitespace,homoglyph \
        [--rate 0.1] [--seed S]
    python -m jobs.robustness ...        (the Ray job entrypoint)

The evaluation pipeline (cluster/evaluation/run.py) runs once: in the model stage every row is
also perturbed (cluster/data/perturb.py: a pure function of seed, perturbation and row id, so any
layout perturbs a row the same way) and the rows whose tokens changed are scored again; the write
stage turns clean and perturbed predictions into paired statistics (cluster/stats/robustness.py),
added up on the driver. metrics.json holds the clean metrics
plus ``robustness``: per perturbation the flip rate, metric changes with paired
CIs, McNemar's p against the clean predictions and the 20 most damaging examples
(also in report.html). The run is registered as kind ``robustness``; `evalctl
leaderboard --perturbation typo` ranks such runs by their perturbed score.
"""

from __future__ import annotations

import typer

from cluster.evaluation.run import EvalResult, run_evaluate
from cluster.specs.workloads import RobustnessSpec
from jobs.eval_print import print_summary
from jobs.evaluate import GATE_OPTIONS
from jobs.spec_cli import Workload, options, spec_command


def run_robustness(spec: RobustnessSpec, registry=None) -> EvalResult:
    """Evaluate with perturbations; registers one ``robustness`` run."""
    return run_evaluate(spec, registry, kind="robustness")


def print_robustness(result: EvalResult) -> None:
    from rich.table import Table

    from jobs.entry import console

    rob = result.metrics["robustness"]
    table = Table(
        "perturbation",
        "flip rate",
        "macro F1 change [95% CI]",
        "accuracy change",
        "McNemar p",
        title=f"robustness at rate {rob['rate']} (seed {rob['seed']}), perturbed - clean",
    )
    for kind, r in rob["perturbations"].items():
        acc = r["metrics"]["accuracy"]["diff"]
        table.add_row(kind, f"{r['flip_rate']:.4f}", _delta(r["metrics"]["f1_macro"]), f"{acc:+.4f}",
                      f"{r['mcnemar_p']:.3g}")  # fmt: skip
    console.print(table)


def _delta(d: dict) -> str:
    ci = d["ci95"]
    return f"{d['diff']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")


def _run(spec: RobustnessSpec, **_) -> None:
    result = run_robustness(spec)
    print_summary(result)
    print_robustness(result)
    if "gate" in result.metrics and not result.metrics["gate"]["passed"]:
        raise typer.Exit(1)


WORKLOAD = Workload(
    spec=RobustnessSpec,
    options=options(
        RobustnessSpec,
        ["model", "data.*", "perturb", "rate", "*", *GATE_OPTIONS],
        flags={"data.path": "--data"},
    ),
    run=_run,
    module="jobs.robustness",
)
command = spec_command(
    WORKLOAD,
    "Evaluate clean and perturbed copies of every row: flip rate, paired metric changes, McNemar p, "
    "the most damaging examples; registers one robustness run.",
)


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.robustness")
