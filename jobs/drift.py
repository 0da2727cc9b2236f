"""Domain shift between two datasets: label-free checks, and the metric gap when both have labels.

    evalctl drift --reference data/sample/airline/test.parquet \\
        --current data/sample/driverless/test.parquet [--model best]
    python -m jobs.drift ...        (the Ray job entrypoint)

Both sides run through one Ray Data pipeline (cluster/evaluation/drift.py: one model load); its
write stage returns small mergeable summaries (cluster/stats/analyses.py DriftAnalyses):
predicted-class counts and confidence values (with a classifier), token-length histograms and
[UNK] sums, and a seeded hash sample of ``embed_rows`` mean-pooled embeddings. The checks
are cluster/stats/drift.py's, each with its p-value (and CI) and a Bonferroni-corrected
verdict; with labels on both sides, the metric gap with an unpaired bootstrap CI.
Without ``--model`` there are no prediction checks, and the embeddings are the base
encoder's. Writes drift.json and report.html, registers a ``drift`` run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cluster.errors import UserError
from cluster.registry.overwrites import mark_overwritten
from cluster.registry.record import Registry
from cluster.specs.workloads import DataSpec, DriftSpec
from cluster.stats.metrics import GAP_METRICS
from jobs.spec_cli import Workload, options, spec_command

ARTIFACTS = ("drift.json", "report.html")
MIN_ROWS = 10  # per side: the domain classifier's 5 folds need a few rows of each


def run_drift(spec: DriftSpec, registry: Registry | None = None) -> dict:
    """Run the checks of ``spec``; writes drift.json + report.html, registers the run; returns the result."""
    from cluster.evaluation.outputs import prepare_out

    registry = registry or Registry()
    model_path, model_id, labels = _model(spec, registry)
    sides = {name: _side(getattr(spec, name), spec, labels) for name in ("reference", "current")}
    out = prepare_out(spec, ARTIFACTS)
    with registry.run(
        "drift",
        spec.model_dump(mode="json"),
        owner=spec.owner,
        dataset_path=spec.current.path,
        dataset_fingerprint=sides["current"]["summary"].fingerprint,
        model_id=model_id,
    ) as run_id:
        out = out or registry.run_dir(run_id)
        out.mkdir(parents=True, exist_ok=True)
        mark_overwritten(registry, str(out), run_id)  # --overwrite: the earlier run's record says so
        result = _checks(spec, model_path, labels, sides, out)
        result.update(run_id=run_id, model=model_id or "none (base encoder embeddings)")
        _write(out, result, sides, labels)
        registry.finish_run(run_id, metrics=_digest(result), artifact_path=str(out))
    return {**result, "out": str(out)}


def _model(spec: DriftSpec, registry: Registry) -> tuple[Path, str | None, list[str] | None]:
    from cluster.models.modeldir import base_model_dir
    from cluster.models.resolve import resolve_model

    if spec.model is None:
        return base_model_dir(), None, None
    ref = resolve_model(spec.model, registry)
    if ref.modality != "text":  # token lengths, [UNK] rate and text embeddings: text only
        raise UserError(
            f"drift checks compare texts (lengths, unknown tokens, embeddings); model {ref.model_id} "
            "is an image classifier: compare its evaluations with `evalctl compare` instead"
        )
    return ref.path, ref.model_id, ref.labels  # a bare encoder: embeddings only


def _side(data: DataSpec, spec: DriftSpec, labels: list[str] | None) -> dict:
    """One dataset checked at the boundary: columns, rows, fingerprint, whether it is labelled."""
    from cluster.data.files import check_columns
    from cluster.data.scan import scan
    from cluster.evaluation.run import check_labels

    schema = check_columns(data.model_copy(update={"label_column": None}))
    labelled = bool(data.label_column) and data.label_column in schema.names and labels is not None
    data = data if labelled else data.model_copy(update={"label_column": None})
    summary = scan(data, spec.limit, spec.rows_per_shard)
    if summary.num_rows < MIN_ROWS:
        raise UserError(f"{data.path} has {summary.num_rows} rows; drift checks need at least {MIN_ROWS}")
    if labelled:
        check_labels(summary.label_counts, labels, data)
    return {"data": data, "summary": summary, "labelled": labelled}


def _checks(spec: DriftSpec, model_path: Path, labels, sides: dict, out: Path) -> dict:
    from cluster.evaluation.drift import drift_pass
    from cluster.models.resolve import ModelRef
    from cluster.stats import drift

    model = ModelRef(path=model_path, model_id=str(model_path), labels=labels)  # on this machine
    t0 = time.perf_counter()
    found = drift_pass(spec, model, labels, sides, out / "_drift_parts")  # both sides, one model load
    timings = {"pipeline_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    ref, cur = found["reference"][1], found["current"][1]
    checks, skipped = {}, {}
    if labels is not None:
        checks["predictions"] = drift.prediction_drift(
            reference_counts=ref["predicted"], current_counts=cur["predicted"]
        )
        checks["confidence"] = drift.confidence_drift(
            reference=ref["confidence"].to_array(), current=cur["confidence"].to_array()
        )
    else:
        skipped["predictions, confidence"] = "no classifier: give --model"
    checks["length"] = drift.length_drift(reference=ref["profile"], current=cur["profile"])
    checks["unknown_tokens"] = drift.unknown_token_drift(reference=ref["profile"], current=cur["profile"])
    checks["domain"] = drift.domain_classifier(
        reference=ref["embeddings"].vectors,
        current=cur["embeddings"].vectors,
        max_rows=spec.embed_rows,
        bootstrap=spec.bootstrap,
        seed=spec.seed,
    )
    result = {"report": drift.drift_report(checks, alpha=spec.alpha), "skipped": skipped}
    result["metric_gap"] = _gap(spec, found, labels, skipped)
    timings["checks_s"] = time.perf_counter() - t0
    result["timings"] = timings
    result.update({name: _describe(side) for name, side in sides.items()})
    result["found"] = found  # summaries for the plots (not written to drift.json)
    return result


def _gap(spec: DriftSpec, found: dict, labels, skipped: dict) -> dict | None:
    from cluster.stats.drift import metric_gap

    ref, cur = found["reference"][0], found["current"][0]
    if labels is None or ref is None or cur is None:
        skipped["metric gap"] = "needs a classifier and labels on both datasets"
        return None
    if spec.bootstrap < 2:
        skipped["metric gap"] = "needs --bootstrap >= 2"
        return None
    return metric_gap(reference=ref, current=cur, labels=labels)


def _describe(side: dict) -> dict:
    s = side["summary"]
    return {
        "path": side["data"].path,
        "rows": s.num_rows,
        "fingerprint": s.fingerprint,
        "labelled": side["labelled"],
    }


def _write(out: Path, result: dict, sides: dict, labels) -> None:
    from cluster.report.html import render_drift, write_html

    found = result.pop("found")
    write_html(render_drift(result, _figures(found, labels)), out / "report.html")
    tmp = out / ".drift.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=_json_default))
    tmp.replace(out / "drift.json")  # last: its presence means the run completed


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def _figures(found: dict, labels) -> dict[str, str]:
    from cluster.report import figures as plots
    from cluster.stats.drift import MAX_TOKENS

    ref, cur = found["reference"][1], found["current"][1]
    lengths = {k: np.repeat(np.arange(MAX_TOKENS + 1), found[k][1]["profile"].length_hist) for k in found}
    top = int(max(np.percentile(v, 99.5) for v in lengths.values() if len(v))) + 2
    fig = {
        "token lengths": plots.histograms(
            lengths, bins=np.arange(0, top), title="Token length", xlabel="tokens"
        )
    }
    if labels is not None:
        conf = {k: found[k][1]["confidence"].to_array() for k in found}
        fig["confidence"] = plots.histograms(
            conf, bins=np.linspace(0, 1, 21), title="Confidence (top-class probability)", xlabel="probability"
        )
        share = {
            k: (v["predicted"] / max(v["predicted"].sum(), 1)).tolist()
            for k, v in (("reference", ref), ("current", cur))
        }
        fig["predicted classes"] = plots.shares(labels, share, "Predicted classes")
    return fig


def _digest(result: dict) -> dict:
    """What the registry keeps: the verdict, each check's statistic, p-value and verdict, the gap."""
    checks = {
        k: {"statistic": c["statistic"], "p_value": c["p_value"], "verdict": c["verdict"]}
        for k, c in result["report"]["checks"].items()
    }
    out = {"verdict": result["report"]["verdict"], "checks": checks}
    if result.get("metric_gap"):
        out["metric_gap"] = {m: {"gap": g["gap"], "ci95": g["ci95"]} for m, g in result["metric_gap"].items()}
    return out


# ------------------------------------------------------------------ command line


def print_drift(result: dict) -> None:
    from rich.table import Table

    from jobs.entry import console
    from jobs.registry_cli import cell

    rep = result["report"]
    table = Table(
        "check", "statistic", "p-value", "95% CI", "verdict",
        title=f"{cell(result['current']['path'])} vs {cell(result['reference']['path'])}: {rep['verdict']} "
        f"(alpha {rep['alpha']} / {len(rep['checks'])} checks)",
    )  # fmt: skip
    for name, c in rep["checks"].items():
        ci = c.get("ci95")
        table.add_row(name, f"{c['statistic']:.4g}", f"{c['p_value']:.3g}",
                      f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "", c["verdict"])  # fmt: skip
    console.print(table)
    for metric, g in (result.get("metric_gap") or {}).items():
        if metric in GAP_METRICS:
            console.print(
                f"{metric} gap (current - reference): {g['gap']:+.4f} "
                f"[{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]"
            )
    for what, why in result["skipped"].items():
        console.print(f"not run: {what} ({why})")
    console.print(f"run {result['run_id']}; report in {result['out']}/report.html", markup=False)


def _run(spec: DriftSpec, **_) -> None:
    print_drift(run_drift(spec))


SIDE_FLAGS = {
    f"{side}.{field}": f"--{side}-{field.replace('_', '-')}"
    for side in ("reference", "current")
    for field in ("text_column", "label_column", "encoding")
}
WORKLOAD = Workload(
    spec=DriftSpec,
    options=options(
        DriftSpec,
        ["reference.path", "current.path", "model", *SIDE_FLAGS, "*"],
        flags={"reference.path": "--reference", "current.path": "--current", **SIDE_FLAGS},
    ),
    run=_run,
    module="jobs.drift",
)
command = spec_command(
    WORKLOAD,
    "Domain shift between two datasets: predicted classes, confidence, lengths, unknown tokens and a "
    "domain classifier on embeddings, each with a p-value and a verdict; the metric gap when both are "
    "labelled.",
)


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.drift")
