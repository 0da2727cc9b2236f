"""Submitting a workload to a Ray cluster as a Ray job, as its validated spec.

`evalctl evaluate ... --address http://HEAD:8265` (or RAY_ADDRESS=http://...) becomes
``JobSubmissionClient(address).submit_job(entrypoint="python -m jobs.evaluate --spec-json
'<spec>'", runtime_env={"working_dir": <staged allow-list>, ...})``. The spec's path fields
(marked in cluster/specs/workloads.py) are localised by name: absolute for a head on this
machine (it sees this disk); for a remote cluster, paths inside the project travel
with the upload and paths outside it are refused. The registry and artifact-store
settings travel without their secrets (jobs/job_env.py). Ray's own CLI runs the same
modules with plain options:

    ray job submit --working-dir . -- python -m jobs.evaluate --model best --data data/x.parquet
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from cluster.errors import UserError
from cluster.ray.auth import auth_hint, ensure_client_auth
from cluster.ray.runtime import resolve_target
from cluster.registry.record import default_owner, new_id
from cluster.specs.parse import Key, PathField, Spec, path_fields, replace_paths
from jobs.entry import console
from jobs.job_env import storage_env
from jobs.upload import Staged, check_size, stage

log = logging.getLogger(__name__)
# Ray's job server waits 10 s for the head's job agent, then answers 500 with this text.
NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S = 60.0  # how long a submission waits for that agent in all
PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
FORWARDED_ENV = ("EVALCLUSTER_HOME", "EVALCLUSTER_LOG_LEVEL", "EVALCLUSTER_DEBUG")


@dataclass
class JobRequest:
    """Everything submit_job gets; ``staged`` is the working dir (removed after submission)."""

    submission_id: str
    entrypoint: str
    runtime_env: dict
    staged: Staged


def submit_if_remote(
    module: str, spec: Spec, address: str | None, wait: bool, argv=(), env: dict | None = None
) -> bool:
    """Submit ``python -m module ARGV --spec-json SPEC`` when the address is a job server.

    Returns False when the workload should run here instead (no job-server address).
    """
    target = resolve_target(address)
    if target.mode != "submit":
        return False
    request = job_request(module, spec, target.address, argv, env or {})  # path errors before connecting
    try:
        client = connect(target.address)
        console.print(request.staged.summary(), markup=False)
        _submit(client, request)
    finally:
        request.staged.cleanup()
    console.print(f"submitted {request.submission_id} to {target.address}: {_shown(request)}", markup=False)
    if wait:
        sys.exit(follow(client, request.submission_id))
    console.print(
        f"follow it with: evalctl jobs logs {request.submission_id} --follow --address {target.address}"
    )
    return True


def job_request(module: str, spec: Spec, address: str, argv=(), env: dict | None = None) -> JobRequest:
    """The job to submit: localised spec as JSON in the entrypoint, staged upload, env vars."""
    from cluster.ray.compat import max_working_dir_bytes

    same_machine = urlparse(address).hostname in ("127.0.0.1", "localhost", "::1")
    if "owner" in type(spec).model_fields and spec.owner is None:
        spec = spec.model_copy(update={"owner": default_owner()})  # the submitter, not the cluster's user
    spec = localize(spec, same_machine)
    named = [] if same_machine else [PROJECT_ROOT / p for p in uploaded_paths(spec)]
    staged = stage(PROJECT_ROOT, named)
    try:
        check_size(staged, max_working_dir_bytes())
    except UserError:
        staged.cleanup()
        raise
    spec_json = spec.model_dump_json(exclude_defaults=False)
    entrypoint = shlex.join(["python", "-m", module, *argv, "--spec-json", spec_json])
    forwarded = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env_vars = {**JOB_ENV, **forwarded, **storage_env(same_machine), **(env or {})}
    runtime_env = {"working_dir": str(staged.root), "env_vars": env_vars}
    return JobRequest(new_id(module.rsplit(".", 1)[-1]), entrypoint, runtime_env, staged)


def localize(spec: Spec, same_machine: bool) -> Spec:
    """The spec with its local paths as the job will see them (see the module docstring)."""

    def fix(key: Key, marker: PathField, value: str) -> str:
        if "://" in value:
            return value
        p = Path(value).expanduser()
        exists = p.exists() if marker.kind != "model" else p.is_dir()
        if marker.kind == "model" and not exists:
            return value  # a name: best, serving, a registered id
        if same_machine:
            return str(p.absolute())
        if marker.kind == "output" or not exists:
            return value  # written (or looked for) on the cluster
        inside = p.resolve().is_relative_to(PROJECT_ROOT)
        if not inside:
            raise UserError(
                f"{'.'.join(key)} = {value} is a local path the cluster cannot see (outside the project "
                f"dir {PROJECT_ROOT}); copy it into the project or use a URI (s3://, gs://, shared FS)"
            )
        return str(p.resolve().relative_to(PROJECT_ROOT))

    return replace_paths(spec, fix)


def uploaded_paths(spec: Spec) -> list[str]:
    """The localised spec's project-relative input paths (uploaded with a remote job)."""
    return [
        value
        for _, marker, value in path_fields(spec)
        if value and marker.kind != "output" and "://" not in value and not Path(value).is_absolute()
        if (PROJECT_ROOT / value).exists()
    ]


def _submit(client, request: JobRequest, agent_wait_s: float = AGENT_WAIT_S) -> None:
    """Submit; while the head's job agent is still registering (a head that just started, on a
    busy machine), Ray answers 500 "No available agent ... try again later": wait for it, bounded."""
    log.info("submitting %s: %s", request.submission_id, request.entrypoint)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            client.submit_job(
                entrypoint=request.entrypoint,
                submission_id=request.submission_id,
                runtime_env=request.runtime_env,
            )
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises plain RuntimeError/ValueError here
            if NO_AGENT not in str(exc) or time.monotonic() > deadline:
                raise UserError(_explain_submit_error(exc)) from exc
            log.info("the head's job agent is not registered yet; submitting again in 1 s")
            time.sleep(1.0)


def _shown(request: JobRequest) -> str:
    """The entrypoint with the spec shortened (its JSON is in the job's info)."""
    words = shlex.split(request.entrypoint)
    i = words.index("--spec-json")
    return shlex.join(words[:i]) + f" --spec-json '<{len(words[i + 1])} bytes>'"


def connect(address: str):
    """A JobSubmissionClient, or one clear line: unreachable address, or the token to set."""
    from ray.job_submission import JobSubmissionClient

    try:
        httpx.get(f"{address}/api/version", timeout=3)
    except httpx.HTTPError as exc:
        raise UserError(
            f"cannot reach the Ray job server at {address} ({type(exc).__name__}); "
            "is the cluster up and the address right?"
        ) from exc
    ensure_client_auth()
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001
        raise UserError(_explain_submit_error(exc, address)) from exc


def _explain_submit_error(exc: Exception, address: str = "") -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = str(exc).lower()
    if "authentication" in low or "unauthorized" in low or "401" in low or "403" in low:
        return f"the Ray cluster {address} refused the token ({text}); {auth_hint()}"
    if "exceeds the limit" in low or "package size" in low or "grpc" in low and "size" in low:
        return (
            f"the job's upload is too large ({text}); pass large data and models as URIs "
            "(s3://, gs://, a shared filesystem) instead of project paths"
        )
    return f"job submission failed: {text}"


def follow(client, submission_id: str) -> int:
    """Stream the job's logs to the end; 0 if it succeeded, else print its log tail and return 1."""

    async def stream():
        async for chunk in client.tail_job_logs(submission_id):
            print(chunk, end="", flush=True)

    asyncio.run(stream())
    status = str(client.get_job_status(submission_id)).split(".")[-1]
    if status == "SUCCEEDED":
        console.print(f"job {submission_id} succeeded")
        return 0
    tail = "\n".join(client.get_job_logs(submission_id).splitlines()[-20:])
    console.print(f"job {submission_id} ended {status}; last log lines:\n{tail}", markup=False)
    return 1
