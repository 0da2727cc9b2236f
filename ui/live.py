"""The live state of a running run, as the pages show it and /api/runs/live serves it to live.js."""

from __future__ import annotations

from cluster.registry.heartbeat import format_age, seconds_since, stale_reason
from cluster.registry.progress import describe, fraction


def live_state(run: dict) -> dict:
    """What the page updates while a run is running: status, stale reason, heartbeat age, elapsed,
    and its progress as its heartbeat last wrote it (``progress``: ``1,234 / 3,725 rows (33%)``,
    ``done`` and ``total`` for the bar; None until the run says)."""
    out = {"status": run["status"], "stale": stale_reason(run)}
    if run["status"] == "running":
        out["heartbeat"] = format_age(seconds_since(run["heartbeat_at"] or run["created_at"]))
        out["elapsed"] = format_age(seconds_since(run["created_at"]))
        progress = run.get("progress")
        out["progress"] = describe(progress)
        shown = fraction(progress) is not None  # the bar: a known total, counts of the recorded shape
        out["done"] = progress["done"] if shown else None
        out["total"] = progress["total"] if shown else None
    return out
