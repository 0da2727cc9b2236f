"""What a submitted job's environment says about the registry and the artifact store.

A Ray job's ``runtime_env`` is stored by the cluster (job info, dashboard): no
password or secret key may be in it. So settings travel by value and secrets by
reference:

- a **remote cluster** (Kubernetes) has its own configuration: the registry URL in
  a Secret mounted as ``EVALCLUSTER_DB_FILE``, the S3 endpoint and credentials in a
  Secret (k8s/README.md). Only ``EVALCLUSTER_ARTIFACTS`` travels, when it is an
  object-store URI (the bucket both sides mean); nothing about the database does.
- a **head on this machine** reads this machine's files, so the job gets the
  submitter's view: ``EVALCLUSTER_DB_FILE`` as a path (a URL given in
  ``EVALCLUSTER_DB`` is first written to a private file, mode 0600, under
  ``EVALCLUSTER_HOME/secrets/``), and AWS credentials as a shared-credentials file
  (``AWS_SHARED_CREDENTIALS_FILE`` + ``AWS_PROFILE``, written the same way); the
  endpoint and region travel by value. Variables set to "" unset what the head's own
  environment may hold, so the job never mixes two configurations.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cluster.data.storage import ENDPOINT_VARS, REGION_VARS, check_location, is_remote
from cluster.registry.artifacts import ENV as ARTIFACTS_ENV
from cluster.registry.db.url import ENV_URL, ENV_URL_FILE
from cluster.specs.settings import settings

AWS_BY_VALUE = (*ENDPOINT_VARS, *REGION_VARS, "AWS_EC2_METADATA_DISABLED")
AWS_FILES = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
PROFILE = "evalcluster"


def storage_env(same_machine: bool) -> dict[str, str]:
    """Environment variables for a submitted job (see the module docstring); never a secret."""
    artifacts = (settings().artifacts or "").strip()
    env = {}
    if artifacts and (same_machine or is_remote(artifacts)):
        env[ARTIFACTS_ENV] = check_location(artifacts, ARTIFACTS_ENV)
    if same_machine:
        env.update(_db_env())
        env.update(_aws_env())
    return env


def _db_env() -> dict[str, str]:
    s = settings()
    url = s.db.get_secret_value().strip() if s.db else ""
    url_file = str(s.db_file).strip() if s.db_file else ""
    if url_file:
        return {ENV_URL: "", ENV_URL_FILE: str(Path(url_file).expanduser().absolute())}
    if url:
        return {ENV_URL: "", ENV_URL_FILE: str(private_file("db-url", url))}
    return {ENV_URL: "", ENV_URL_FILE: ""}  # the job uses the submitter's SQLite registry too


def _aws_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in AWS_BY_VALUE if os.environ.get(k)}
    env.update({k: str(Path(os.environ[k]).expanduser().absolute()) for k in AWS_FILES if os.environ.get(k)})
    if os.environ.get("AWS_PROFILE"):
        env["AWS_PROFILE"] = os.environ["AWS_PROFILE"]
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        lines = [f"[{PROFILE}]", f"aws_access_key_id = {key}", f"aws_secret_access_key = {secret}"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            lines.append(f"aws_session_token = {os.environ['AWS_SESSION_TOKEN']}")
        env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(private_file("aws-credentials", "\n".join(lines) + "\n")),
            AWS_PROFILE=PROFILE,
            **dict.fromkeys(AWS_SECRETS, ""),
        )
    return env


def private_file(kind: str, content: str) -> Path:
    """``content`` in a file only its owner can read (0600, in a 0700 directory), named by its hash,
    under ``EVALCLUSTER_HOME/secrets/`` (written once; an existing one is reused)."""
    from cluster.registry.record import default_home

    folder = default_home() / "secrets"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / f"{kind}-{hashlib.sha256(content.encode()).hexdigest()[:16]}"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        tmp.replace(path)
    return path
