"""`evalctl ui`: open the team's dashboard, from this process or on a head's Ray Serve.

    evalctl ui [--host 127.0.0.1] [--port 8090]       served here until Ctrl-C (ui/server.py)
    evalctl ui --serve [--route-prefix /ui]           a Serve application beside the scorer

The dashboard is reached through plain calls (ui/server.py) and, on Serve, through its import
path ``ui.serve_app:build_app``. Tokens (access, write) are read from their variables here and
reach a Serve replica as SHA-256 digests only.
"""

from __future__ import annotations

import importlib
import inspect
import time

import httpx
import typer

from cluster.apikey import api_key, digest
from cluster.errors import UserError
from cluster.specs.serve import ServeSpec
from cluster.specs.settings import settings
from cluster.specs.ui import LOOPBACK, UISpec
from jobs.entry import console
from jobs.spec_cli import Workload, options, spec_command
from ui.server import prepare, serve_forever

IMPORT_PATH = "ui.serve_app:build_app"
APP_NAME = "evalcluster-ui"


def run_ui(spec: UISpec, address: str | None = None) -> None:
    """Serve the dashboard here until interrupted, or deploy it on Serve (``spec.serve``)."""
    if spec.serve:
        url = deploy_ui(spec, address)
        console.print(f"dashboard at {url}/ (Ray Serve application {APP_NAME}); `evalctl serve stop` ends it")
        return
    app, guard = prepare(spec)
    access = "access token required" if guard.access_sha256 else "no access token: this machine only"
    writes = "need the write token" if guard.write_sha256 else f"are off (set ${spec.write_token_env})"
    console.print(
        f"dashboard at http://{_shown_host(spec.host)}:{spec.port}/ ({access}; alias moves {writes})"
    )
    console.print(f"registry {app.state.ctx.db.target.display}; Ctrl-C stops it", markup=False)
    serve_forever(app, spec)


def deploy_ui(
    spec: UISpec, address: str | None = None, start_head: bool = True, timeout_s: float = 180
) -> str:
    """Deploy the dashboard on the Serve of the cluster at ``address`` (default: the local head,
    started if none runs) under ``spec.route_prefix``; returns its URL once /healthz answers."""
    from ray import serve

    from cluster.ray.compat import serve_client  # the running proxy's address
    from cluster.ray.logs import quiet_logger
    from cluster.registry.record import Registry
    from jobs.deploy import join_cluster, proxy_location

    registry = Registry()
    registry.list_runs(limit=1)  # this shell's registry opens: a bad setting is one line, now
    join_cluster(address, start_head)
    default = ServeSpec()
    with quiet_logger("ray.serve"):  # joins a running Serve as it is; else starts it where the scorer goes
        serve.start(
            proxy_location=proxy_location(), http_options={"host": default.host, "port": default.port}
        )
    http = serve_client().http_config
    access, write = api_key(spec.token_env), api_key(spec.write_token_env)
    if http.host not in LOOPBACK and not access:
        raise UserError(
            f"Serve's proxy listens on {http.host}, beyond this machine: set ${spec.token_env} "
            f"(or ${spec.token_env}_FILE) to an access token for the dashboard first"
        )
    args = {
        "page_size": spec.page_size,
        "access_sha256": digest(access) if access else None,
        "write_sha256": digest(write) if write else None,
        "home": str(registry.home),
        "db_file": str(db_file) if (db_file := settings().db_file) else None,
        "registry": registry.database.target.display,
    }
    module, attr = IMPORT_PATH.split(":")
    app = getattr(importlib.import_module(module), attr)(args)
    serve.run_many(
        [serve.RunTarget(app, name=APP_NAME, route_prefix=spec.route_prefix)],
        wait_for_applications_running=False,
    )
    url = f"http://{_shown_host(http.host)}:{http.port}{spec.route_prefix}"
    _wait_healthy(url, timeout_s)
    return url


def _wait_healthy(url: str, timeout_s: float) -> None:
    """Poll /healthz until it answers 200; a deployment Serve gave up on is said at once."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == "DEPLOY_FAILED":
            raise UserError(
                f"the dashboard did not start on Serve: {status.message.strip().splitlines()[-1]}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise UserError(f"the dashboard did not answer at {url}/healthz within {timeout_s:.0f} s")


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host


ADDRESS = inspect.Parameter(
    "address",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Option(None, help="With --serve: the cluster's Ray address (default: the local head)."),
    annotation=str | None,
)
command = spec_command(
    Workload(spec=UISpec, options=options(UISpec, ["*"]), run=run_ui, config=False, extras=[ADDRESS]),
    "The team's dashboard in a browser: runs, leaderboards, comparisons, sweeps, models and aliases.",
)
