"""Submitting workload commands to a Ray cluster as Ray jobs.

`evalctl evaluate ... --address http://HEAD:8265` (or RAY_ADDRESS=http://...) becomes
``JobSubmissionClient(address).submit_job(entrypoint="python -m jobs.evaluate ...",
runtime_env={"working_dir": <this project>, ...})``: the same command runs in the
cluster, from an uploaded copy of the project (so its cwd is never /tmp, where
Ray's session dir could shadow the ``ray`` package). Ray's own CLI does the same:

    ray job submit --working-dir . -- python -m jobs.evaluate --model best --data data/x.parquet
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

import httpx

from cluster.errors import UserError
from cluster.registry import new_id
from cluster.runtime import auth_hint, ensure_client_auth, resolve_target
from jobs.entry import console

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Not uploaded: VCS, environments, caches, local data and outputs (pass those as URIs).
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "data",
    "artifacts",
    "out",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    ".notes",
    "build",
    "dist",
]
LOCAL_FLAGS = ("--address", "--wait")  # consumed here, not passed to the job


def submit_if_remote(
    module: str, argv: list[str], address: str | None, wait: bool, paths: list[str | None] = ()
) -> bool:
    """Submit ``python -m module argv`` when the address is a job server; False = run locally.

    ``paths``: the command's path arguments. A head on this machine sees this disk; for
    a remote cluster, local paths outside the project are refused (it cannot see them)
    and paths inside it travel with the working dir.
    """
    target = resolve_target(address)
    if target.mode != "submit":
        return False
    same_machine = urlparse(target.address).hostname in ("127.0.0.1", "localhost", "::1")
    if not same_machine:
        check_paths(p for p in paths if p)
    check_upload_size()
    client = connect(target.address)
    job_argv = job_arguments(argv, absolute=same_machine)
    entrypoint = f"python -m {module} {shlex.join(job_argv)}".strip()
    submission_id = new_id(module.rsplit(".", 1)[-1])
    try:
        client.submit_job(entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env())
    except Exception as exc:  # noqa: BLE001 - Ray raises plain RuntimeError/ValueError here
        raise UserError(_explain_submit_error(exc)) from None
    console.print(f"submitted {submission_id} to {target.address}: {entrypoint}")
    if wait:
        sys.exit(follow(client, submission_id))
    console.print(f"follow it with: evalctl jobs logs {submission_id} --follow --address {target.address}")
    return True


def job_arguments(argv: list[str], absolute: bool = False) -> list[str]:
    """The command's own arguments minus the submission flags.

    Paths that exist here become absolute for a head on this machine (it sees this
    disk), else relative to the project (the job runs in an uploaded copy of it).
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LOCAL_FLAGS:
            skip = name == "--address" and "=" not in arg
            continue
        out.append(_localize(arg, absolute))
    return out


def _localize(arg: str, absolute: bool) -> str:
    p = Path(arg)
    if "://" in arg or not arg or arg.startswith("-") or not p.exists():
        return arg
    if absolute:
        return str(p.resolve())
    if p.resolve().is_relative_to(PROJECT_ROOT):
        return str(p.resolve().relative_to(PROJECT_ROOT))
    return arg


def check_paths(paths) -> None:
    for path in paths:
        if "://" in path:
            continue
        p = Path(path).expanduser().resolve()
        if p.exists() and not p.is_relative_to(PROJECT_ROOT):
            raise UserError(
                f"{path} is a local path the cluster cannot see (outside the project dir "
                f"{PROJECT_ROOT}); copy it into the project or use a URI (s3://, gs://, shared FS)"
            )
        if p.exists() and any(p.is_relative_to(PROJECT_ROOT / ex) for ex in ("data", ".venv", "artifacts")):
            raise UserError(
                f"{path} lies under an excluded directory ({', '.join(('data', '.venv', 'artifacts'))}) "
                "that is not uploaded with the job; use a URI or another directory"
            )


def check_upload_size() -> None:
    """Refuse early, naming the biggest entries, when the working dir exceeds Ray's upload limit.

    Counts uncompressed bytes (the zip Ray uploads is smaller, so this errs on the safe side).
    """
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    top = {ex for ex in EXCLUDES if "*" not in ex}
    sizes: dict[str, int] = {}
    for entry in PROJECT_ROOT.iterdir():
        if entry.name in top:
            continue
        files = [entry] if entry.is_file() else (f for f in entry.rglob("*") if f.is_file())
        sizes[entry.name] = sum(f.stat().st_size for f in files if "__pycache__" not in f.parts)
    total = sum(sizes.values())
    if total >= GCS_STORAGE_MAX_SIZE:
        biggest = ", ".join(
            f"{k} ({v / 2**20:.1f} MiB)" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        )
        raise UserError(
            f"the project dir is too large to upload as the job's working dir ({total / 2**20:.1f} MiB "
            f"> Ray's limit of {GCS_STORAGE_MAX_SIZE / 2**20:.1f} MiB); biggest: {biggest}. Move large "
            "files out, or into data/ or artifacts/ (not uploaded), and pass them as URIs"
        )


def runtime_env() -> dict:
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("EVALCLUSTER_HOME"):  # a local head shares this disk: register into the same home
        env["EVALCLUSTER_HOME"] = os.environ["EVALCLUSTER_HOME"]
    return {"working_dir": str(PROJECT_ROOT), "excludes": EXCLUDES, "env_vars": env}


def connect(address: str):
    """A JobSubmissionClient, or one clear line: unreachable address, or the token to set."""
    from ray.job_submission import JobSubmissionClient

    try:
        httpx.get(f"{address}/api/version", timeout=3)
    except httpx.HTTPError as exc:
        raise UserError(
            f"cannot reach the Ray job server at {address} ({type(exc).__name__}); "
            "is the cluster up and the address right?"
        ) from None
    ensure_client_auth()
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001
        raise UserError(_explain_submit_error(exc, address)) from None


def _explain_submit_error(exc: Exception, address: str = "") -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = str(exc).lower()
    if "authentication" in low or "unauthorized" in low or "401" in low or "403" in low:
        return f"the Ray cluster {address} refused the token ({text}); {auth_hint()}"
    if "exceeds the limit" in low or "package size" in low or "grpc" in low and "size" in low:
        return (
            f"the project is too large to upload as the job's working dir ({text}); "
            f"move large files out of {PROJECT_ROOT} or under an excluded dir ({', '.join(EXCLUDES[:6])})"
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


def own_argv(*command: str) -> list[str]:
    """This process's arguments after the command words (`evalctl serve deploy` or `python -m ...`)."""
    argv = sys.argv[1:]
    for word in command:
        if argv and argv[0] == word:
            argv = argv[1:]
    return argv
