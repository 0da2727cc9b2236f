"""The team's shared record at the command line: leaderboard, paired comparison of two runs, reports.

The ranking and the comparison are cluster/registry/leaderboard.py and comparison.py (the
dashboard shows the same); this module prints them and writes the side-by-side report.

evalctl leaderboard [--data PATH | --dataset FINGERPRINT] [--metric f1_macro]
evalctl compare RUN_A RUN_B [--json]
evalctl report RUN
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import typer
from rich.table import Table

from cluster.data.storage import is_remote, join
from cluster.errors import UserError
from cluster.registry import comparison
from cluster.registry.artifacts import exists, fetch_file
from cluster.registry.leaderboard import leaderboard
from cluster.registry.overwrites import require_outputs
from cluster.registry.record import Registry
from cluster.specs.team import CompareSpec, LeaderboardSpec
from jobs.entry import console
from jobs.registry_cli import cell
from jobs.spec_cli import Workload, options, spec_command

# ------------------------------------------------------------------ leaderboard


def show_leaderboard(spec: LeaderboardSpec, as_json: bool = False) -> None:
    """Print the leaderboard of ``spec`` (a table per dataset, or JSON)."""
    dataset = spec.dataset
    if spec.data is not None:
        from cluster.data.scan import scan_any

        dataset = scan_any(spec.data).fingerprint
    groups = leaderboard(Registry(), dataset, spec.metric, spec.perturbation)
    if as_json:
        console.print_json(json.dumps(groups, default=str))
        return
    if not groups:
        what = "robustness runs" if spec.perturbation else "evaluation runs"
        console.print(f"No finished {what}" + (f" on dataset {dataset}." if dataset else "."))
        return
    for key, rows in groups.items():
        if spec.perturbation:
            console.print(_robustness_table(key, rows, spec.metric, spec.perturbation))
        else:
            console.print(_board_table(key, rows, spec.metric))


def _board_table(fp: str, rows: list[dict], metric: str) -> Table:
    table = Table(
        "#",
        "run",
        "model",
        "owner",
        metric,
        "95% CI",
        "n",
        "created",
        title=f"dataset {cell(fp)} ({cell(rows[0]['dataset_path'])})",
    )
    for i, r in enumerate(rows, 1):
        m = r["metrics"]
        ci = m.get("ci95", {}).get(metric)
        table.add_row(
            str(i),
            cell(r["id"]),
            cell(r["model_id"]),
            cell(r["owner"]),
            f"{m[metric]:.4f}",
            f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "",
            str(m.get("n", "")),
            cell(r["created_at"]),
        )
    return table


def _robustness_table(key: str, rows: list[dict], metric: str, perturbation: str) -> Table:
    table = Table(
        "#", "run", "model", f"{metric} ({perturbation})", "clean", "change [95% CI]", "flip rate", "n",
        title=f"robustness to {perturbation}: dataset {cell(key)} ({cell(rows[0]['dataset_path'])})",
    )  # fmt: skip
    for i, r in enumerate(rows, 1):
        p, m = r["perturbed"], r["metrics"]
        ci = p["delta_ci95"].get(metric)
        change = f"{p['delta'][metric]:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
        clean = f"{m[metric]:.4f}" if metric in m else ""
        table.add_row(
            str(i), cell(r["id"]), cell(r["model_id"]), f"{r['score']:.4f}", clean, change,
            f"{p['flip_rate']:.4f}", str(m.get("n", "")),
        )  # fmt: skip
    return table


JSON_OPTION = inspect.Parameter(
    "as_json", inspect.Parameter.KEYWORD_ONLY, default=typer.Option(False, "--json"), annotation=bool
)
leaderboard_command = spec_command(
    Workload(
        spec=LeaderboardSpec,
        options=options(
            LeaderboardSpec,
            ["data.path", "data.text_column", "data.image_column", "data.label_column", "*"],
            flags={"data.path": "--data"},
        ),
        run=show_leaderboard,
        config=False,
        extras=[JSON_OPTION],
    ),
    "Evaluation runs on the same dataset, ranked, with 95% CIs (datasets are never mixed).",
)


# ------------------------------------------------------------------ compare


def compare_runs(
    registry: Registry,
    ref_a: str,
    ref_b: str,
    metric: str = "f1_macro",
    replicates: int = 1000,
    seed: int = 0,
) -> dict:
    """Paired comparison of two evaluation runs of the same dataset (cluster/registry/comparison.py);
    writes a side-by-side report."""
    result, ma, mb = comparison.compare_runs(registry, ref_a, ref_b, metric, replicates, seed)
    result["report"] = str(_write_compare_report(registry, result, ma, mb))
    return result


def _write_compare_report(registry: Registry, result: dict, ma: dict, mb: dict) -> Path:
    from cluster.report.html import render_comparison
    from cluster.report.translation import render_translation_comparison

    path = registry.home / "compare" / f"{result['a']}__{result['b']}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    translation = result.get("task") == "translation"
    tmp.write_text(
        render_translation_comparison(result) if translation else render_comparison(result, ma, mb)
    )
    tmp.replace(path)
    return path


def show_comparison(spec: CompareSpec, run_a: str, run_b: str, as_json: bool = False) -> None:
    """Print the comparison of B against A (a table, McNemar, the verdict), or JSON."""
    result = compare_runs(Registry(), run_a, run_b, spec.metric, spec.bootstrap, spec.seed)
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table(
        "metric", "A", "B", "B - A", "95% CI of B - A", title=f"A = {result['a']}  B = {result['b']}"
    )
    for m, d in result["metrics"].items():
        ci = d["ci95"]
        table.add_row(
            m,
            f"{d['a']:.4f}",
            f"{d['b']:.4f}",
            f"{d['diff']:+.4f}",
            f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "",
        )
    console.print(table)
    # classification; segmentation (per-image IoU); translations: a paired-bootstrap p-value per metric
    mc, wx = result.get("mcnemar"), result.get("wilcoxon")
    if mc:
        console.print(
            f"McNemar: A right/B wrong {mc['a_right_b_wrong']}, A wrong/B right {mc['a_wrong_b_right']}, "
            f"exact p = {mc['p_value']:.3g}"
        )
    if wx:
        console.print(
            f"Wilcoxon signed-rank on per-image IoU ({wx['images']} images): B better on {wx['b_better']}, "
            f"A better on {wx['a_better']}, p = {wx['p_value']:.3g}"
        )
    console.print(f"[bold]{result['verdict']}[/]")
    console.print(f"side-by-side report: {result['report']}")


def _argument(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=typer.Argument(..., help=help), annotation=str
    )


compare_command = spec_command(
    Workload(
        spec=CompareSpec,
        options=options(CompareSpec, ["*"]),
        run=show_comparison,
        config=False,
        extras=[
            _argument("run_a", "Run id (or unique prefix) of model A's evaluation."),
            _argument("run_b", "Run id of model B's evaluation, same dataset."),
            JSON_OPTION,
        ],
    ),
    "B vs A: differences with paired-bootstrap 95% CIs, McNemar's exact test, a verdict.",
)


# ------------------------------------------------------------------ report


def report_command(run: str = typer.Argument(..., help="Run id or unique prefix.")) -> None:
    """Print the path of a run's HTML report (fetched to a local file when the run's artifacts
    are in an object store)."""
    registry = Registry()
    console.print(str(fetch_report(registry, registry.get_run(run))), markup=False)


def fetch_report(registry: Registry, run: dict) -> Path:
    """A local file holding ``run``'s report.html: in place, or downloaded from the artifact store
    to ``EVALCLUSTER_HOME/reports/<run-id>.html``."""
    location = join(run["artifact_path"] or "", "report.html") if run["artifact_path"] else None
    require_outputs(registry, run, "its report")
    if run["status"] != "finished" or location is None or not exists(location):
        raise UserError(f"run {run['id']} ({run['kind']}, {run['status']}) has no report")
    if not is_remote(location):
        return Path(location)
    return fetch_file(location, registry.home / "reports" / f"{run['id']}.html")
