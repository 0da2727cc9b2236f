"""`evalctl demo`: the whole story on embedded defaults, in a few minutes on 2 CPU cores.

sample splits -> a small ASHA sweep -> evaluation of its best model on the test
split -> the model served on Ray Serve -> three queries -> the leaderboard.
Everything runs on the persistent local head (started if needed), so the served
model outlives the command.
"""

from __future__ import annotations

import time
from pathlib import Path

from cluster.specs.parse import load_spec_file
from cluster.specs.serve import ServeSpec
from cluster.specs.team import LeaderboardSpec
from cluster.specs.workloads import DataSpec, EvaluateSpec, SweepSpec
from jobs.entry import console

CONFIGS = Path(__file__).resolve().parent / "configs"
QUERIES = [
    "I love this airline, the crew was wonderful!",
    "Flight delayed three hours and nobody told us.",
    "Boarding starts at gate 12 at 9:40.",
]


def run_demo(out: Path, full: bool = False) -> None:
    """Run the demo; prints each step's result and how to stop what it started."""
    from cluster.data.corpus import sample_splits
    from cluster.ray.runtime import head_up
    from jobs import deploy, evaluate, query, sweep, team
    from jobs.eval_print import print_summary

    t0 = time.perf_counter()
    console.rule("1/6 sample data")
    for split, counts in sample_splits(out).items():
        console.print(f"{split:>10}: {sum(counts.values()):>6} rows  {counts}")

    console.rule("2/6 local Ray head")
    console.print(f"Ray head at {head_up()} (token auth on)")

    console.rule(f"3/6 fine-tuning sweep ({'quality' if full else 'demo'} configuration)")
    spec = load_spec_file(SweepSpec, CONFIGS / ("sweep.yaml" if full else "demo.yaml"))
    spec.train = DataSpec(path=str(out / "train.parquet"))
    spec.validation = DataSpec(path=str(out / "validation.parquet"))
    sweep.print_summary(sweep.run_sweep(spec))

    console.rule("4/6 sharded evaluation of `best` on the test split")
    result = evaluate.run_evaluate(EvaluateSpec(model="best", data=DataSpec(path=str(out / "test.parquet"))))
    print_summary(result)

    console.rule("5/6 serving `best` and three queries")
    served = deploy.deploy(ServeSpec(model="best"))
    console.print(f"serving {served['model_id']} at {served['url']}")
    query._print_predictions(QUERIES, query.post(served["url"], "/v1/predict", {"texts": QUERIES}))

    console.rule("6/6 leaderboard on the test split")
    team.show_leaderboard(LeaderboardSpec(dataset=result.metrics["dataset"]["fingerprint"]))
    console.print(
        f'demo done in {time.perf_counter() - t0:.0f}s. Try `evalctl query "your text"`, '
        f"`evalctl runs list`, `evalctl report {result.run_id}`."
    )
    console.print("Stop serving with `evalctl serve stop`; stop Ray with `evalctl cluster down`.")
