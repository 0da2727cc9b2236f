"""Models and aliases, and the one write the dashboard makes: moving an alias.

    GET  /models?before=&after=        registered models, newest first, with their aliases
    GET  /models/{id}                  a model: lineage, aliases, its evaluations, its alias history
    GET  /aliases?before=              every alias, and the history of moves (who, when, from, to)
    GET  /aliases/move?alias=&model=   the form to move (promote, roll back) an alias
    POST /aliases/move                 the move: write token + CSRF token required

A move goes through ``Registry.set_alias`` exactly as `evalctl models alias` does, recorded in
the alias's history with ``via = ui`` and the name the mover gave.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from cluster.errors import UserError, printable
from cluster.registry.queries import RunFilter, alias_moves, all_aliases, models_page, runs_page
from ui.context import context, read_form, render, url
from ui.security import CSRF_COOKIE, HEADERS, same_origin

router = APIRouter()
MAX_NAME = 100


@router.get("/models")
def models(request: Request, before: str | None = None, after: str | None = None):
    ctx = context(request)
    page = models_page(ctx.db, ctx.page_size, before or None, after or None)
    return render(request, "models.html.j2", page=page)


@router.get("/models/{model_id}")
def model(request: Request, model_id: str):
    ctx = context(request)
    found = ctx.registry.resolve_model(model_id)
    if found is None:
        raise UserError(f'no registered model "{printable(model_id[:80])}"')
    names = [a for a in all_aliases(ctx.db) if a["model_id"] == found["id"]]
    runs = runs_page(ctx.db, RunFilter(model=found["id"]), limit=20)
    moves = alias_moves(ctx.db, model=found["id"], limit=50)
    produced_by = None
    if found.get("run_id"):
        try:
            produced_by = ctx.registry.get_run(found["run_id"])
        except UserError:
            produced_by = None  # recorded in another registry
    return render(
        request, "model.html.j2", model=found, aliases=names, runs=runs, moves=moves, produced_by=produced_by
    )


@router.get("/aliases")
def aliases(request: Request, before: str | None = None, moved: str | None = None):
    ctx = context(request)
    start = int(before) if before and before.isdigit() else None
    moves = alias_moves(ctx.db, limit=ctx.page_size, before=start)
    older = moves[-1]["id"] if len(moves) == ctx.page_size else None
    return render(
        request, "aliases.html.j2", aliases=all_aliases(ctx.db), moves=moves, older=older, moved=moved
    )


@router.get("/aliases/move")
def move_form(request: Request, alias: str = "", model: str = "", note: str = ""):
    return render(request, "move.html.j2", alias=alias, model=model, note=note, by="", error=None)


@router.post("/aliases/move")
async def move(request: Request):
    ctx = context(request)
    form = await read_form(request)
    values = {k: form.get(k, "") for k in ("alias", "model", "note", "by")}
    if not same_origin(request.headers):
        return _refused(request, values, "a cross-site request may not move an alias", 403)
    if not _csrf_ok(request, form.get("csrf", "")):
        return _refused(request, values, "the form has expired or came from elsewhere: reload it", 403)
    if ctx.guard.write_sha256 is None:
        return _refused(request, values, "this dashboard is read-only (no write token is configured)", 403)
    if not ctx.guard.may_write(form.get("write_token")):
        return _refused(request, values, "the write token is missing or wrong: nothing was moved", 403)
    by = values["by"].strip()
    if not by or len(by) > MAX_NAME:
        return _refused(request, values, f"say who you are (1 to {MAX_NAME} characters)", 400)
    try:
        ctx.registry.set_alias(
            values["alias"].strip(), values["model"].strip(), by=by, via="ui", note=values["note"]
        )
    except UserError as exc:
        return _refused(request, values, str(exc), 400)
    target = url(request.scope.get("root_path", ""), "/aliases", {"moved": values["alias"].strip()})
    return RedirectResponse(target, status_code=303, headers=HEADERS)


def _csrf_ok(request: Request, sent: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def _refused(request: Request, values: dict, why: str, status: int):
    return render(request, "move.html.j2", status=status, error=why, **values)
