"""What every page works with: the registry, the guard, the templates, and rendering a page.

Templates are ui/templates, with the report templates (cluster/report/templates: their
macros for intervals, numbers, figures and gate verdicts) behind them; autoescape is on,
so every value from users or data (owners, aliases, labels, texts, paths) reaches the page
as text. Links are made with ``u(path, **query)``, which prefixes the app's root path
(``/ui`` on Ray Serve) and URL-encodes the query.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse

from cluster.errors import UserError
from cluster.registry.record import Registry
from cluster.report.html import environment as report_environment
from ui.security import CSRF_COOKIE, HEADERS, Guard, new_csrf

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM = 16 * 1024  # bytes of a form body


@dataclass
class Context:
    """The app's state: one Registry (its engine is shared by the request threads)."""

    registry: Registry
    guard: Guard
    page_size: int = 50

    @property
    def db(self):
        return self.registry.database


def context(request: Request) -> Context:
    return request.app.state.ctx


@functools.lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES), report_environment().loader])
    env = jinja2.Environment(
        loader=loader,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def url(root: str, path: str, query: dict | None = None) -> str:
    """``root + path`` with the non-empty values of ``query`` URL-encoded."""
    params = [(k, v) for k, v in (query or {}).items() if v not in (None, "")]
    return root + path + ("?" + urlencode(params, doseq=True) if params else "")


def render(request: Request, template: str, status: int = 200, **values) -> HTMLResponse:
    """A page: the template rendered with ``values``, scrubbed of known secrets, with the
    security headers and (for forms) the CSRF cookie."""
    ctx = context(request)
    root = request.scope.get("root_path", "")
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
    html = (
        templates()
        .get_template(template)
        .render(
            u=lambda path, **query: url(root, path, query),
            page_path=request.url.path[len(root) :],
            csrf=csrf,
            writable=ctx.guard.write_sha256 is not None,
            registry_display=ctx.db.target.display,
            **values,
        )
    )
    response = HTMLResponse(ctx.guard.scrub(html), status_code=status, headers=HEADERS)
    if CSRF_COOKIE not in request.cookies:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path=root or "/")
    return response


def json_response(request: Request, data, status: int = 200) -> JSONResponse:
    """JSON scrubbed of known secrets, with the security headers."""
    response = JSONResponse(data, status_code=status, headers=HEADERS)
    response.body = context(request).guard.scrub(response.body.decode()).encode()
    response.headers["content-length"] = str(len(response.body))
    return response


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (first value of each field), at most MAX_FORM bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise UserError(f"form body over {MAX_FORM} bytes")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in fields.items()}
