"""Leaderboards and the comparison of two runs.

    GET /leaderboard?metric=&offset=                    datasets with ranked runs, newest first
    GET /leaderboard/{fingerprint}?metric=&subset=&offset=   one dataset's ranking, CIs, test vs the leader
    GET /compare?a=RUN&b=RUN&metric=                    paired comparison of two evaluations

The ranking is cluster/registry/leaderboard.py (what `evalctl leaderboard` prints), the
comparison cluster/registry/comparison.py (what `evalctl compare` prints).
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from markupsafe import Markup

from cluster.registry import comparison
from cluster.registry.leaderboard import Board, board_datasets, board_page, board_subsets
from cluster.registry.scores import describe_subset
from cluster.report import figures, svgplots
from cluster.stats.metrics import METRICS, metric_names, paired_metrics
from ui.context import context, render

router = APIRouter()
SIGNIFICANT = 0.05  # p-value under which a run is marked significantly behind the leader
SHOWN_IN_FIGURE = 20


def _offset(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


@router.get("/leaderboard")
def datasets(request: Request, metric: str = "f1_macro", offset: str | None = None):
    ctx = context(request)
    board = Board(metric or "f1_macro")
    start = _offset(offset)
    rows, total = board_datasets(ctx.db, board, ctx.page_size, start)
    return render(
        request,
        "leaderboards.html.j2",
        rows=rows,
        total=total,
        offset=start,
        page_size=ctx.page_size,
        board=board,
        metrics=metric_names(),
        display={k: v.display for k, v in METRICS.items()},
    )


@router.get("/leaderboard/{fingerprint}")
def ranking(
    request: Request, fingerprint: str, metric: str = "f1_macro", subset: str = "", offset: str | None = None
):
    ctx = context(request)
    board = Board(metric or "f1_macro", subset)
    start = _offset(offset)
    page = board_page(ctx.db, fingerprint, board, ctx.page_size, start)
    for r in page.rows:
        r["behind"] = bool(r["versus"] and r["versus"]["p_value"] < SIGNIFICANT)
        r["extra"] = _subset_detail(r, board)
    return render(
        request,
        "leaderboard.html.j2",
        fingerprint=fingerprint,
        board=board,
        page=page,
        offset=start,
        page_size=ctx.page_size,
        subsets=[(s, describe_subset(s)) for s in board_subsets(ctx.db, fingerprint, board.metric)],
        metrics=metric_names(),
        display={k: v.display for k, v in METRICS.items()},
        chart=_figure(page, board),
        compared=paired_metrics(),
        significant=SIGNIFICANT,
        dataset_path=page.rows[0]["dataset_path"] if page.rows else None,
    )


def _subset_detail(row: dict, board: Board) -> dict:
    """Under a perturbation: the clean score, the change with its paired CI, the flip rate;
    on a slice: the slice's size."""
    m = row.get("metrics") or {}
    if board.kind == "robustness" and board.subset:
        kind = board.subset.split(":", 1)[1].rpartition("@")[0]
        p = m.get("robustness", {}).get("perturbations", {}).get(kind, {})
        return {
            "clean": m.get(board.metric),
            "change": p.get("delta", {}).get(board.metric),
            "change_ci": p.get("delta_ci95", {}).get(board.metric),
            "flip_rate": p.get("flip_rate"),
        }
    if board.subset.startswith("slice:"):
        return {"n": m.get("slices", {}).get(board.subset[6:], {}).get("n")}
    return {}


def _figure(page, board: Board) -> Markup | None:
    """The page's best runs with their intervals against the leader's score (dashed)."""
    shown = [r for r in page.rows if r["ci_low"] is not None][:SHOWN_IN_FIGURE]
    if not shown or page.leader is None:
        return None
    rows = [
        (
            f"#{r['rank']} {r['id'][-13:]}",
            r["score"],
            r["ci_low"],
            r["ci_high"],
            figures.GREEN if r["id"] == page.leader["id"] else figures.RED if r["behind"] else figures.BLUE,
        )
        for r in shown
    ]
    title = f"{METRICS[board.metric].display}, {describe_subset(board.subset)}"
    xlabel = "score and 95% CI; dashed: the leader's score"
    return Markup(svgplots.intervals(rows, title, xlabel, ref=page.leader["score"], bars=False))


@router.get("/compare")
def compare(request: Request, a: str = "", b: str = "", metric: str = "f1_macro"):
    ctx = context(request)
    a, b = a.strip(), b.strip()
    view = {
        "a": a,
        "b": b,
        "metric": metric,
        "result": None,
        "compared": paired_metrics(),
    }
    if a and b:
        ra, rb = (comparison.evaluation(ctx.registry, ref)["id"] for ref in (a, b))
        view.update(_cached_comparison(ctx.registry, ra, rb, metric))
    return render(request, "compare.html.j2", display={k: v.display for k, v in METRICS.items()}, **view)


@functools.lru_cache(maxsize=32)
def _cached_comparison(registry, run_a: str, run_b: str, metric: str) -> dict:
    """The full comparison of two finished runs (immutable records: cached by their ids)."""
    full = comparison.compare_in_full(registry, run_a, run_b, metric)
    ma, mb = full["ma"], full["mb"]
    labels = ma["labels"]
    bars = svgplots.grouped_bars(
        labels,
        {
            "A": [ma["per_class"][lab]["f1"] for lab in labels],
            "B": [mb["per_class"][lab]["f1"] for lab in labels],
        },
        "Per-class F1, A and B",
    )
    return {
        **full,
        "fig_a": Markup(figures.confusion(ma, "A: confusion matrix")),
        "fig_b": Markup(figures.confusion(mb, "B: confusion matrix")),
        "fig_classes": Markup(bars),
    }
