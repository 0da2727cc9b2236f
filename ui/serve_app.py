"""The dashboard as a Ray Serve application, next to the scorer on a head's Serve proxy.

Import path ``ui.serve_app:build_app`` (`evalctl ui --serve`, jobs/ui_cli.py, or a Serve config
file). ``args``: ``page_size``, ``access_sha256`` and ``write_sha256`` (the tokens' digests,
never the tokens), ``home`` (EVALCLUSTER_HOME), ``db_file`` (an EVALCLUSTER_DB_FILE path) and
``registry`` (the registry the deployer uses, password hidden). Each replica opens the
registry its node's environment names and refuses to start when that is not ``registry``:
a dashboard over another record than the team's would be worse than none.
"""

from __future__ import annotations

import os

from ray import serve

from cluster.errors import UserError
from cluster.registry.db.url import ENV_URL, ENV_URL_FILE
from ui.app import create_app
from ui.security import Guard, known_secrets

APP_NAME = "evalcluster-ui"
DEPLOYMENT = "Dashboard"


@serve.ingress()
class Dashboard:
    """One replica: the FastAPI app of ui/app.py, built when the replica starts."""

    def __init__(self, args: dict):
        self.args = dict(args)

    def __serve_build_asgi_app__(self):
        a = self.args
        if a.get("db_file"):  # a path (a mounted Secret), never the URL itself
            os.environ.pop(ENV_URL, None)
            os.environ[ENV_URL_FILE] = a["db_file"]
        guard = Guard(a.get("access_sha256"), a.get("write_sha256"), known_secrets())
        app = create_app(guard, int(a.get("page_size", 50)), a.get("home"))
        found = app.state.ctx.db.target.display
        if a.get("registry") and found != a["registry"]:
            raise UserError(
                f"this node's registry is {found}, the deployer's {a['registry']}: give the head's "
                f"nodes the same {ENV_URL_FILE} (or {ENV_URL}) as the shell that deploys the dashboard"
            )
        return app


def build_app(args: dict):
    """The Serve application: one replica of zero CPUs (it waits on the database, not on compute,
    and must fit on a head that keeps its CPUs for evaluations)."""
    options = {"name": DEPLOYMENT, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
    return serve.deployment(**options)(Dashboard).bind(args)
