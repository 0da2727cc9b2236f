"""Robustness and drift results: the robustness runs with each perturbation's change, and the
drift runs with their verdict and the checks that found a shift.

    GET /robustness?rob_before=&rob_after=&drift_before=&drift_after=   (each listing pages on its own)
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from cluster.registry.queries import RunFilter, runs_page
from ui.context import context, render

router = APIRouter()
SHOWN = 20  # runs of each kind per page


@router.get("/robustness")
def robustness(
    request: Request,
    rob_before: str | None = None,
    rob_after: str | None = None,
    drift_before: str | None = None,
    drift_after: str | None = None,
):
    ctx = context(request)
    robust, drifted = (
        RunFilter(kind="robustness", status="finished"),
        RunFilter(kind="drift", status="finished"),
    )
    rob = runs_page(ctx.db, robust, SHOWN, rob_before or None, rob_after or None)
    drift = runs_page(ctx.db, drifted, SHOWN, drift_before or None, drift_after or None)
    return render(
        request,
        "robustness.html.j2",
        rob=rob,
        rob_rows=[_robust(r) for r in rob.rows],
        drift=drift,
        drift_rows=[_drift(r) for r in drift.rows],
    )


def _robust(run: dict) -> dict:
    """A robustness run's macro-F1 change per perturbation (with its paired CI) and its worst one."""
    digest = (run.get("metrics") or {}).get("robustness") or {}
    per = []
    for kind, p in (digest.get("perturbations") or {}).items():
        change = (p.get("delta") or {}).get("f1_macro")
        per.append({"kind": kind, "change": change, "ci": (p.get("delta_ci95") or {}).get("f1_macro"),
                    "flip_rate": p.get("flip_rate")})  # fmt: skip
    scored = [p for p in per if p["change"] is not None]
    worst = min(scored, key=lambda p: p["change"]) if scored else None
    return {"run": run, "rate": digest.get("rate"), "per": per, "worst": worst}


def _drift(run: dict) -> dict:
    """A drift run's verdict and the checks that reported drift."""
    m = run.get("metrics") or {}
    checks = m.get("checks") or {}
    drifted = [name for name, c in checks.items() if c.get("verdict") == "drift"]
    return {"run": run, "verdict": m.get("verdict"), "checks": len(checks), "drifted": drifted,
            "gap": m.get("metric_gap") or {}}  # fmt: skip
