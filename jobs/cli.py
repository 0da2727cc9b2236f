"""evalctl: one CLI for data, sweeps, evaluation, serving and the team's registry.

Thin by design: each workload command is generated from its spec (jobs/spec_cli.py:
--config plus one option per spec field) and calls a plain function (which tests
call directly). Heavy imports (ray, torch) happen inside the commands so that
`evalctl --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from cluster.config import DataSpec
from jobs.entry import LEVELS, configure_logging, console, run
from jobs.spec_cli import Workload, options, spec_command

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="evalcluster: fine-tune, evaluate and serve pretrained language models on Ray.",
)
data_app = typer.Typer(no_args_is_help=True, help="Sample data and dataset checks.")
app.add_typer(data_app, name="data")


@app.callback()
def main_options(
    log_level: str | None = typer.Option(
        None,
        help=f"Log level of evalcluster and Ray's Python loggers ({' | '.join(LEVELS)}); "
        "default WARNING, or $EVALCLUSTER_LOG_LEVEL.",
    ),
    debug: bool = typer.Option(False, help="Print the full traceback of an error (or EVALCLUSTER_DEBUG=1)."),
) -> None:
    """evalcluster: fine-tune, evaluate and serve pretrained language models on Ray."""
    if debug:
        os.environ["EVALCLUSTER_DEBUG"] = "1"
    if log_level:
        configure_logging(log_level)


# ------------------------------------------------------------------ data


@data_app.command("sample")
def data_sample(
    out: Path = typer.Option(..., "--out", help="Directory for the three splits."),
    seed: int = typer.Option(0, help="Seed of the stratified split."),
) -> None:
    """Write train/validation/test Parquet splits of the bundled tweet corpus (80/10/10)."""
    from cluster.corpus import LABELS, sample_splits

    counts = sample_splits(out, seed)
    table = Table("split", "rows", *LABELS, title=f"sample corpus -> {out}")
    for split, by_label in counts.items():
        table.add_row(split, str(sum(by_label.values())), *[str(by_label[lab]) for lab in LABELS])
    console.print(table)


def _check(spec: DataSpec) -> None:
    from cluster.data import scan

    summary = scan(spec)
    console.print(f"{spec.path}: {summary.num_rows} rows, fingerprint {summary.fingerprint}")
    for label, n in summary.label_counts.items():
        console.print(f"  {label}: {n}")


data_app.command("check")(
    spec_command(
        Workload(
            spec=DataSpec,
            options=options(
                DataSpec, ["path", "text_column", "label_column", "id_column"], flags={"path": ""}
            ),
            run=_check,
            config=False,
        ),
        "Validate a dataset (columns, null/empty texts) and print its size, labels and fingerprint.",
    )
)


# ------------------------------------------------------------------ demo


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("data/sample"), help="Where the sample splits go."),
    full: bool = typer.Option(False, help="Run the quality sweep configuration (about 20 minutes)."),
) -> None:
    """The whole story: sample data, sweep, evaluation, serving, queries, leaderboard."""
    from jobs.demo import run_demo

    run_demo(out, full)


from jobs import cluster_cli, deploy, evaluate, jobs_cli, pretrain, query, registry_cli, sweep, team  # noqa: E402  (workload commands are registered after the core ones)

registry_cli.register(app)  # runs, models, db
app.add_typer(cluster_cli.cluster_app, name="cluster")

app.command("evaluate")(evaluate.command)
app.add_typer(sweep.sweep_app, name="sweep")
app.command("pretrain")(pretrain.command)
app.add_typer(deploy.serve_app, name="serve")
app.command("query")(query.query)
app.add_typer(jobs_cli.jobs_app, name="jobs")
app.command("leaderboard")(team.leaderboard_command)
app.command("compare")(team.compare_command)
app.command("report")(team.report_command)


def main() -> None:
    """Console-script entry point."""
    run(app)


if __name__ == "__main__":
    main()
