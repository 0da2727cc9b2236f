"""The web dashboard's spec (ui/, `evalctl ui`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cluster.specs.fields import Bool, Name
from cluster.specs.parse import Spec
from cluster.specs.search_space import Int

LOOPBACK = ("127.0.0.1", "localhost", "::1")
RoutePrefix = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._-]+$")]


class UISpec(Spec):
    """The team's dashboard: pages over the registry and the artifact store (ui/app.py)."""

    host: Name = Field(
        "127.0.0.1",
        description="Interface to listen on; any other than 127.0.0.1 needs the access token (--token-env).",
    )
    port: Int = Field(8090, ge=1, le=65535, description="HTTP port.")
    page_size: Int = Field(50, ge=1, le=500, description="Rows per page of a listing.")
    token_env: Name = Field(
        "EVALCLUSTER_UI_TOKEN",
        description="Variable holding the access token (or ${NAME}_FILE a file with it): set = every "
        "page needs it (a login form, or 'Authorization: Bearer TOKEN'); required off 127.0.0.1.",
    )
    write_token_env: Name = Field(
        "EVALCLUSTER_UI_WRITE_TOKEN",
        description="Variable holding the write token (or ${NAME}_FILE): moving an alias from the "
        "dashboard asks for it; unset = the dashboard is read-only.",
    )
    serve: Bool = Field(
        False,
        description="Deploy on the Ray Serve of a running head (next to the scorer, under --route-prefix) "
        "instead of serving from this process.",
    )
    route_prefix: RoutePrefix = Field(
        "/ui", description="With --serve: the dashboard's path on Serve's proxy."
    )

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK
