"""The runs pages: the filtered listing, one run, its report, and the live state of running runs.

GET /runs?kind=&status=&owner=&model=&dataset=&since=&until=&before=&after=
GET /runs/{id}              the run: record, scores with CIs, per class, gate, lineage, timings...
GET /runs/{id}/report       the run's own report.html, sandboxed (shown inline in the run page)
GET /api/runs/live?id=...   status, staleness, heartbeat age, progress of up to 100 runs (live.js)
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cluster.data.storage import join
from cluster.errors import UserError
from cluster.registry.artifacts import exists, read_text
from cluster.registry.heartbeat import format_age, stale_after, stale_reason
from cluster.registry.overwrites import require_outputs
from cluster.registry.queries import RunFilter, count_runs, runs_page
from cluster.registry.scores import SCORED_KINDS
from cluster.stats.metrics import METRICS
from ui.context import context, json_response, render
from ui.live import live_state
from ui.run_view import run_view
from ui.security import HEADERS, REPORT_CSP

router = APIRouter()
KINDS = ("evaluate", "robustness", "sweep", "pretrain", "drift", "gate")  # offered in the filter form
MAX_LIVE = 100


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _day(value: str | None, name: str) -> date | None:
    value = _blank(value)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise UserError(f'{name}: "{value[:40]}" is not a date; use YYYY-MM-DD') from exc


@router.get("/runs")
def runs_list(
    request: Request,
    kind: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
    after: str | None = None,
):
    return _listing(
        request, "/runs", "Runs", kind, status, owner, model, dataset, since, until, before, after
    )


@router.get("/sweeps")
def sweeps_list(
    request: Request,
    status: str | None = None,
    owner: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
    after: str | None = None,
):
    """The sweeps: the runs listing with kind = sweep (a sweep's page shows its trials and curves)."""
    return _listing(
        request, "/sweeps", "Sweeps", "sweep", status, owner, model, dataset, since, until, before, after
    )


def _listing(request, list_path, heading, kind, status, owner, model, dataset, since, until, before, after):
    ctx = context(request)
    where = RunFilter(
        kind=_blank(kind),
        status=_blank(status),
        owner=_blank(owner),
        model=_blank(model),
        dataset=_blank(dataset),
        since=_day(since, "since"),
        until=_day(until, "until"),
    )
    page = runs_page(ctx.db, where, ctx.page_size, _blank(before), _blank(after))
    rows = [_listed(r) for r in page.rows]
    filters = {
        "kind": where.kind if list_path == "/runs" else None,  # /sweeps has its kind in its path
        "status": where.status,
        "owner": where.owner,
        "model": where.model,
        "dataset": where.dataset,
        "since": _blank(since),
        "until": _blank(until),
    }
    return render(
        request,
        "runs.html.j2",
        heading=heading,
        list_path=list_path,
        rows=rows,
        page=page,
        total=count_runs(ctx.db, where),
        filters=filters,
        kinds=KINDS,
        stale_after=format_age(stale_after()),
    )


def _listed(run: dict) -> dict:
    """A run as the listing shows it: stale or alive, and its headline score."""
    m = run.get("metrics") or {}
    score = None
    if run["kind"] in SCORED_KINDS and isinstance(m.get("f1_macro"), float):
        score = ("macro F1", m["f1_macro"])
    elif run["kind"] == "sweep" and isinstance(m.get(m.get("metric", "")), float):
        score = (f"val. {METRICS[m['metric']].display}", m[m["metric"]])
    elif run["kind"] == "drift" and "verdict" in m:
        score = ("verdict", m["verdict"])
    elif run["kind"] == "gate" and "passed" in m:
        score = ("gate", "passed" if m["passed"] else "FAILED")
    return {**run, "stale": stale_reason(run), "live": live_state(run), "score": score}


@router.get("/api/runs/live")
def runs_live(request: Request, id: list[str] = Query(default=[])):  # noqa: A002 - ?id=a&id=b
    ctx = context(request)
    if len(id) > MAX_LIVE:
        raise UserError(f"at most {MAX_LIVE} runs per request")
    found = {}
    for ref in id:
        try:
            run = ctx.registry.get_run(ref)
        except UserError:
            continue
        if run["id"] == ref:  # exact ids only: a prefix could name another run tomorrow
            found[ref] = live_state(run)
    return json_response(request, found)


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str):
    ctx = context(request)
    run = ctx.registry.get_run(run_id)
    return render(request, "run.html.j2", **run_view(ctx, run))


@router.get("/runs/{run_id}/report")
def run_report(request: Request, run_id: str):
    """The run's report.html as written, under a sandboxing CSP (no script runs, nothing loads)."""
    ctx = context(request)
    run = ctx.registry.get_run(run_id)
    location = join(run["artifact_path"], "report.html") if run.get("artifact_path") else None
    require_outputs(ctx.registry, run, "its report")  # a later --overwrite run's is there now
    if run["status"] != "finished" or location is None or not exists(location):
        raise UserError(f"run {run['id']} ({run['kind']}, {run['status']}) has no report")
    html = ctx.guard.scrub(read_text(location, "report"))
    return Response(html, media_type="text/html", headers={**HEADERS, "Content-Security-Policy": REPORT_CSP})
