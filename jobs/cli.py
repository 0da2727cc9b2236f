"""evalctl: one CLI for data, sweeps, evaluation, serving and the team's registry.

Thin by design: each workload command is generated from its spec (jobs/spec_cli.py:
--config plus one option per spec field) and calls a plain function (which tests
call directly). Heavy imports (ray, torch) happen inside the commands, and a
workload's module is imported only when its command runs (LAZY below): `evalctl
evaluate` never loads what serving, sweeps or job submission need.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import typer
import typer.core
from rich.table import Table

from cluster.errors import UserError
from cluster.specs.workloads import DataSpec
from jobs.entry import LEVELS, configure_logging, console, run
from jobs.spec_cli import Workload, options, spec_command

# Commands whose module is imported only when they run (or when `evalctl --help` lists them):
# name -> (module, attribute: a typer command function or a sub-app). Importing all of them up
# front cost `evalctl evaluate` ~0.3 s of CPU here (httpx, job submission, serving, sweeps).
LAZY = {
    "evaluate": ("jobs.evaluate", "command"),
    "gate": ("jobs.gate", "command"),
    "robustness": ("jobs.robustness", "command"),
    "drift": ("jobs.drift", "command"),
    "sweep": ("jobs.sweep", "sweep_app"),
    "pretrain": ("jobs.pretrain", "command"),
    "serve": ("jobs.deploy", "serve_app"),
    "query": ("jobs.query", "query"),
    "jobs": ("jobs.jobs_cli", "jobs_app"),
    "leaderboard": ("jobs.team", "leaderboard_command"),
    "compare": ("jobs.team", "compare_command"),
    "report": ("jobs.team", "report_command"),
    "runs": ("jobs.registry_cli", "runs_app"),
    "models": ("jobs.registry_cli", "models_app"),
    "db": ("jobs.registry_cli", "db_app"),
    "cluster": ("jobs.cluster_cli", "cluster_app"),
    "ui": ("jobs.ui_cli", "command"),
}


class LazyGroup(typer.core.TyperGroup):
    """evalctl's command group: the commands in LAZY are built from their module on first use."""

    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in LAZY:
            module, attr = LAZY[name]
            target = getattr(importlib.import_module(module), attr)
            if not isinstance(target, typer.Typer):  # a command function: a one-command app
                target, fn = typer.Typer(), target
                target.command(name)(fn)
            self.commands[name] = typer.main.get_command(target)
            self.commands[name].name = name
        return super().get_command(ctx, name)


app = typer.Typer(
    cls=LazyGroup,
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
    out: Path | None = typer.Option(None, "--out", help="Directory for the three text splits."),
    images: Path | None = typer.Option(
        None, "--images", help="Directory for the three animal-mnist image splits (image, label)."
    ),
    segmentation: Path | None = typer.Option(
        None,
        "--segmentation",
        help="Directory for the three synthetic segmentation splits (image, mask, id).",
    ),
    translation: Path | None = typer.Option(
        None,
        "--translation",
        help="Directory for English->French Bible verse pairs (KJV -> Louis Segond 1910), split by book.",
    ),
    seed: int = typer.Option(0, help="Seed of the stratified split."),
    by_domain: bool = typer.Option(
        False,
        "--by-domain",
        help="Also cut each split by source domain (airline, apple, claritin, coachella, deflategate, "
        "driverless): OUT/<domain>/{train,validation,test}.parquet.",
    ),
) -> None:
    """Write train/validation/test Parquet splits (80/10/10) of the bundled tweet corpus (--out),
    of animal-mnist, 28x28 animal silhouettes in 10 classes, as PNG bytes (--images), and/or of
    synthetic 64x64 scenes of those silhouettes with exact masks, background + 10 classes (--segmentation),
    and/or of a parallel corpus for translation (--translation)."""
    if out is None and images is None and segmentation is None and translation is None:
        raise UserError(
            "give --out DIR (the tweet corpus), --images DIR (animal-mnist), --segmentation DIR "
            "(animal scenes with masks) and/or --translation DIR (Bible verses)"
        )
    if by_domain and out is None:
        raise UserError("--by-domain cuts the tweet corpus by domain: give --out DIR with it")
    if out is not None:
        from cluster.data.corpus import LABELS, sample_splits

        _print_counts(sample_splits(out, seed), LABELS, f"sample corpus -> {out}")
        if by_domain:
            _sample_by_domain(out, seed)
    if images is not None:
        from cluster.data.image_data import ANIMAL_LABELS, sample_image_splits

        _print_counts(sample_image_splits(images, seed), ANIMAL_LABELS, f"animal-mnist images -> {images}")
    if segmentation is not None:
        _print_segmentation_sample(segmentation, seed)
    if translation is not None:
        from jobs.translate_cli import print_translation_sample

        print_translation_sample(translation)


def _print_segmentation_sample(segmentation: Path, seed: int) -> None:
    from cluster.data.segmentation_sample import CLASSES, sample_segmentation_splits

    counts = sample_segmentation_splits(segmentation, seed)
    table = Table("split", "scenes", *CLASSES[1:], title=f"animal scenes, scenes per class -> {segmentation}")
    for split, c in counts.items():
        table.add_row(split, str(c["scenes"]), *[str(c[lab]) for lab in CLASSES[1:]])
    console.print(table)


def _print_counts(counts: dict, labels: list[str], title: str) -> None:
    table = Table("split", "rows", *labels, title=title)
    for split, by_label in counts.items():
        table.add_row(split, str(sum(by_label.values())), *[str(by_label[lab]) for lab in labels])
    console.print(table)


def _sample_by_domain(out: Path, seed: int) -> None:
    from cluster.data.corpus import LABELS
    from cluster.data.domains import sample_splits_by_domain

    counts = sample_splits_by_domain(out, seed)
    table = Table("domain", "split", "rows", *LABELS, title=f"by domain -> {out}/<domain>/<split>.parquet")
    for domain, splits in counts.items():
        for split, by_label in splits.items():
            table.add_row(domain, split, str(sum(by_label.values())), *[str(by_label[lab]) for lab in LABELS])
    console.print(table)


def _check(spec: DataSpec) -> None:
    from cluster.data.pairs import check_pairs, is_pairs_data
    from cluster.data.scan import scan_any

    # segmentation: image + mask pairs
    if is_pairs_data(spec.path, spec.mask_column, spec.label_column, spec.encoding):
        s = check_pairs(spec)
        console.print(f"{spec.path}: {s['rows']} image+mask pairs, fingerprint {s['fingerprint']}")
        for value, n in s["pixels_per_value"].items():
            console.print(f"  mask value {value}: {n} pixels")
        return

    summary = scan_any(spec)
    console.print(f"{spec.path}: {summary.num_rows} rows, fingerprint {summary.fingerprint}")
    for label, n in summary.label_counts.items():
        console.print(f"  {label}: {n}")


data_app.command("check")(
    spec_command(
        Workload(
            spec=DataSpec,
            options=options(
                DataSpec,
                [
                    "path",
                    "text_column",
                    "image_column",
                    "label_column",
                    "id_column",
                    "mask_column",
                    "ignore_index",
                    "encoding",
                ],
                flags={"path": ""},
            ),
            run=_check,
            config=False,
        ),
        "Validate a dataset (columns, null/empty texts or images) and print its size, labels and "
        "fingerprint (image data: a file with --image-column and no text column, or LABEL/xxx.png).",
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


def main() -> None:
    """Console-script entry point."""
    run(app)


if __name__ == "__main__":
    main()
