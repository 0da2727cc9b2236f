"""The dashboard as one FastAPI application: pages, the access check, errors as pages.

``create_app(guard, page_size, home)`` builds it for `evalctl ui` (ui/server.py, uvicorn) and
for Ray Serve (ui/serve_app.py). Every request but ``/healthz``, ``/login`` and ``/static/``
passes the access check first (ui/security.py); a browser without the token is sent to the
login form, any other client gets 401. A user error (an unknown run, a bad filter) is a page
saying so in one line, 404 or 400; anything else is a 500 page that names no internals (the
server log has the traceback).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.errors import UserError
from cluster.registry.record import Registry
from ui import boards, models, robustness, runs
from ui.context import Context, context, read_form, render, url
from ui.security import HEADERS, SESSION_COOKIE, Guard

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
OPEN = ("/healthz", "/login", "/static/")  # answered without the access token
NOT_FOUND = ("no run ", "no registered model ", "no alias ")  # UserErrors that mean "no such thing"


def create_app(guard: Guard, page_size: int = 50, home: str | None = None) -> FastAPI:
    """The dashboard over the registry of ``home`` (default: EVALCLUSTER_HOME / EVALCLUSTER_DB)."""
    app = FastAPI(title="evalcluster dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = Context(Registry(home), guard, page_size)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (runs, boards, models, robustness):
        app.include_router(module.router)
    app.middleware("http")(_access)
    app.exception_handler(UserError)(_user_error)
    app.exception_handler(RequestValidationError)(_bad_request)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_internal_error)
    app.get("/")(_home)
    app.get("/healthz")(_health)
    app.get("/login")(_login_form)
    app.post("/login")(_login)
    return app


async def _access(request: Request, call_next):
    guard = context(request).guard
    root = request.scope.get("root_path", "")
    path = request.url.path[len(root) :] if request.url.path.startswith(root) else request.url.path
    authorization = request.headers.get("authorization")
    if not path.startswith(OPEN) and not guard.allows(authorization, request.cookies.get(SESSION_COOKIE)):
        if "text/html" in request.headers.get("accept", "") and not authorization:
            return RedirectResponse(url(root, "/login", {"next": path}), status_code=303, headers=HEADERS)
        return JSONResponse(
            {"detail": "the dashboard needs its access token: 'Authorization: Bearer TOKEN'"},
            status_code=401,
            headers={**HEADERS, "WWW-Authenticate": "Bearer"},
        )
    response = await call_next(request)
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def _home(request: Request):
    return RedirectResponse(url(request.scope.get("root_path", ""), "/runs"), status_code=303)


def _health(request: Request):
    return PlainTextResponse("ok", headers=HEADERS)


def _login_form(request: Request, next: str = "/runs"):  # noqa: A002 - the query parameter's name
    return render(request, "login.html.j2", next=_local(next), error=None)


async def _login(request: Request):
    guard = context(request).guard
    form = await read_form(request)
    nxt = _local(form.get("next", "/runs"))
    if guard.access_sha256 is None:
        return RedirectResponse(url(request.scope.get("root_path", ""), nxt), status_code=303)
    if not guard.allows(f"Bearer {form.get('token', '')}", None):
        return render(request, "login.html.j2", status=401, next=nxt, error="wrong token")
    response = RedirectResponse(
        url(request.scope.get("root_path", ""), nxt), status_code=303, headers=HEADERS
    )
    root = request.scope.get("root_path", "") or "/"
    response.set_cookie(SESSION_COOKIE, guard.session_value(), httponly=True, samesite="strict", path=root)
    return response


def _local(path: str) -> str:
    """A page of this app to go back to after the login (never another site's address)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/runs"


def _user_error(request: Request, exc: UserError):
    message = str(exc)
    status = 404 if message.startswith(NOT_FOUND) or " has no report" in message else 400
    return render(request, "error.html.j2", status=status, message=message)


def _bad_request(request: Request, exc: RequestValidationError):
    fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "request" for e in exc.errors())
    return render(request, "error.html.j2", status=400, message=f"bad value for {fields}")


def _http_error(request: Request, exc: StarletteHTTPException):
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    return render(request, "error.html.j2", status=exc.status_code, message=message)


def _internal_error(request: Request, exc: Exception):
    log.exception("%s %s failed", request.method, request.url.path)
    return render(
        request, "error.html.j2", status=500, message="internal error (the server's log has the details)"
    )
