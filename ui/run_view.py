"""What the run page shows, by kind: read from the run's record and, once it finished, its metrics.json.

Evaluation and robustness runs: headline scores with CIs (the record), per class, figures,
gate verdicts, slices, robustness, lineage and timings (metrics.json, as its report.html
shows them: cluster/report/html.py). Sweeps: trials, learning curves, and the sweep of the
other init on the same training data when there is one (pretrained vs random). Drift, gate
and pretraining runs: their recorded results. A finished run's metrics.json never changes,
so it is cached by run id.
"""

from __future__ import annotations

import functools
import json
import logging

from markupsafe import Markup

from cluster.data.storage import join
from cluster.errors import UserError
from cluster.registry.artifacts import exists, read_text
from cluster.registry.heartbeat import stale_reason
from cluster.registry.overwrites import require_outputs
from cluster.registry.progress import describe
from cluster.registry.queries import RunFilter, runs_page
from cluster.registry.scores import SCORED_KINDS
from cluster.report import figures
from cluster.report.html import lineage_rows, metric_rows, report_figures, timing_rows
from cluster.stats.metrics import METRICS
from ui.live import live_state

log = logging.getLogger(__name__)


def run_view(ctx, run: dict) -> dict:
    """The template values of the run page."""
    m = run.get("metrics") or {}
    view = {
        "run": run,
        "stale": stale_reason(run),
        "live": run["status"] == "running",
        "progress": live_state(run) if run["status"] == "running" else {},
        "ended_at": describe(run.get("progress")),  # how far an ended run got
        "spec_json": json.dumps(run["spec"], indent=2, default=str),
        "versions": run.get("versions") or {},
        "full": None,
        "fig": {},
        "artifact_error": None,
        "has_report": False,
        "sweep": None,
    }
    if run["status"] == "finished" and run.get("artifact_path"):
        try:
            require_outputs(ctx.registry, run, "its report and metrics")  # a later run's are there now
            view["has_report"] = exists(join(run["artifact_path"], "report.html"))
            if run["kind"] in SCORED_KINDS:
                view["full"] = finished_metrics(run["id"], run["artifact_path"])
        except UserError as exc:  # the store unreachable: the record still shows
            view["artifact_error"] = str(exc)
    full = view["full"] or {}
    if run["kind"] in SCORED_KINDS:
        view["metric_rows"] = metric_rows(m)
        view["fig"] = report_figures(full) if full else {}
        view["lineage"] = lineage_rows(full.get("lineage") or {})
    view["timings"] = timing_rows(full.get("timings") or m.get("timings") or {})
    if run["kind"] == "sweep" and run["status"] == "finished":
        view["sweep"] = sweep_view(ctx, run)
    view["display"] = {k: v.display for k, v in METRICS.items()}
    return view


@functools.lru_cache(maxsize=128)
def finished_metrics(run_id: str, artifact_path: str) -> dict:
    """A finished run's metrics.json (immutable, so cached by run id)."""
    del run_id  # part of the cache key
    return json.loads(read_text(join(artifact_path, "metrics.json"), "metrics"))


def sweep_view(ctx, run: dict) -> dict:
    """A finished sweep: its trials, and learning curves with the other init's sweep beside it."""
    summary = {**run["metrics"], "run_id": run["id"]}
    metric = summary.get("metric", "f1_macro")
    shown = [summary]
    other = _other_init(ctx, run, summary.get("init", "pretrained"))
    if other is not None:
        shown.append({**other["metrics"], "run_id": other["id"]})
    curves = Markup(figures.learning_curves(shown, metric)) if any(s.get("curves") for s in shown) else None
    return {"summary": summary, "metric": metric, "shown": shown, "other": other, "curves": curves}


def _other_init(ctx, run: dict, init: str) -> dict | None:
    """The newest finished sweep on the same training data with the other init, if any."""
    if not run.get("dataset_fingerprint"):
        return None
    where = RunFilter(kind="sweep", status="finished", dataset=run["dataset_fingerprint"])
    for other in runs_page(ctx.db, where, limit=20).rows:
        if other["id"] != run["id"] and (other.get("metrics") or {}).get("init", "pretrained") != init:
            return other
    return None
