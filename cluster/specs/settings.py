"""Every ``EVALCLUSTER_*`` environment variable, read in one place (pydantic-settings).

A setting of the process rather than of one workload (where its records live, how it logs, the
warm pool's limits) is an environment variable; this model is the only place one is read, its
default written and its range checked, and docs/design.md's table of variables is made from it
(tests/test_settings.py checks the two agree). A bad value is one line naming the variable.

    >>> Settings(home="/tmp/h").heartbeat_s
    30.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cluster.errors import UserError

PREFIX = "EVALCLUSTER_"
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(lambda v: str(v).upper())]


class Settings(BaseSettings):
    """The process's settings, from ``EVALCLUSTER_<NAME>`` variables (names case-insensitive)."""

    # An empty variable is unset: a submitted job blanks the submitter's registry variables this way.
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

    home: Path = Field(
        Path("~/.evalcluster"), description="The local registry (registry.db), artifacts and caches."
    )
    artifacts: str | None = Field(
        None, description="Artifact store: a directory or a URI (s3://bucket/prefix); default: HOME."
    )
    cache: Path | None = Field(None, description="This node's copies of stored models; default: HOME/cache.")
    db: SecretStr | None = Field(
        None,
        description="Registry database URL (postgresql+psycopg://USER:PASSWORD@HOST/DB); default: SQLite.",
    )
    db_file: Path | None = Field(
        None, description="A file holding that URL (e.g. a mounted Secret), not both."
    )
    log_level: LogLevel = Field("WARNING", description="Console log level (evalctl --log-level).")
    debug: bool = Field(
        False, description="Print the full traceback above an error's line (evalctl --debug)."
    )
    db_retry_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds a registry write waits for an unreachable PostgreSQL server (0: no retry).",
    )
    heartbeat_s: float = Field(30.0, gt=0, description="Seconds between a running run's heartbeats.")
    stale_after_s: float = Field(180.0, gt=0, description="A run silent this long is shown stale.")
    warm_max_models: int = Field(2, ge=0, description="Warm pool: models kept loaded on a head.")
    warm_max_gib: float = Field(4.0, ge=0, description="Warm pool: memory its loaded models may hold, GiB.")
    url: str = Field("http://127.0.0.1:8000", description="The scorer's base URL (evalctl query).")


# Read by cluster/apikey.py under the name ServeSpec.api_key_env says (this is its default), since
# a deployment may name another variable: the scorer's key, a file holding it, its forwarded digest.
API_KEY_VARIABLES = ("EVALCLUSTER_API_KEY", "EVALCLUSTER_API_KEY_FILE", "EVALCLUSTER_API_KEY_SHA256")
# The dashboard's access and write tokens, read by cluster/apikey.py the same way under the names
# UISpec.token_env and write_token_env give (these are their defaults).
UI_TOKEN_VARIABLES = (
    "EVALCLUSTER_UI_TOKEN",
    "EVALCLUSTER_UI_TOKEN_FILE",
    "EVALCLUSTER_UI_WRITE_TOKEN",
    "EVALCLUSTER_UI_WRITE_TOKEN_FILE",
)


def settings() -> Settings:
    """The settings as the environment says now, or a UserError naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0])
        secret = Settings.model_fields[field].annotation in (SecretStr, SecretStr | None)
        value = "***" if secret else repr(err.get("input"))  # a secret is never echoed
        msg = err["msg"][:1].lower() + err["msg"][1:]
        raise UserError(f"{PREFIX}{field.upper()}={value}: {msg}") from exc


def home() -> Path:
    """EVALCLUSTER_HOME, expanded."""
    return settings().home.expanduser()
