"""`evalctl ui`: the dashboard served by uvicorn from this process.

It listens on 127.0.0.1 unless told otherwise; any other interface needs the access token
(the server refuses to start without one). The registry is opened before anything listens, so
a wrong database setting is one line, not a page that fails later.
"""

from __future__ import annotations

import socket

import uvicorn

from cluster.errors import UserError
from cluster.specs.ui import UISpec
from ui.app import create_app
from ui.security import Guard, guard_from_env


def check_exposure(spec: UISpec, guard: Guard) -> None:
    """Off loopback, every request needs the access token: refuse to listen without one."""
    if not spec.loopback and guard.access_sha256 is None:
        raise UserError(
            f"--host {spec.host} exposes the dashboard beyond this machine: set ${spec.token_env} "
            f"(or ${spec.token_env}_FILE) to an access token first, or keep --host 127.0.0.1"
        )


def check_port(host: str, port: int) -> None:
    """A port someone else holds is one line now, not a uvicorn traceback later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
            ) from exc


def prepare(spec: UISpec):
    """The app for ``spec``, its registry opened and checked, the address free; (app, guard)."""
    guard = guard_from_env(spec.token_env, spec.write_token_env)
    check_exposure(spec, guard)
    app = create_app(guard, spec.page_size)
    app.state.ctx.registry.list_runs(limit=1)  # opened (a SQLite registry upgraded) before listening
    check_port(spec.host, spec.port)
    return app, guard


def serve_forever(app, spec: UISpec) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.run(
        app, host=spec.host, port=spec.port, log_level="warning", access_log=False, server_header=False
    )
