"""`evalctl serve deploy|status|stop`: put a model online on Ray Serve.

    python -m jobs.deploy --model best [--replicas N | --autoscale MIN:MAX]

The application is reached by its import path ``serve.app:build_app`` (jobs never
import serve/). Without --address, the persistent local head is started if none
runs (Serve must outlive this command). Deploying again with another model
updates the running application in place: Serve starts the new replicas, then
drains the old ones, so no request fails during the swap.
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import typer

from cluster.config import ServeSpec, from_dict, to_dict
from cluster.errors import UserError
from jobs.entry import console

APP_NAME = "evalcluster"
IMPORT_PATH = "serve.app:build_app"

serve_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Online scoring on Ray Serve.")


def deploy(
    spec: ServeSpec, address: str | None = None, start_head: bool = True, timeout_s: float = 300
) -> dict:
    """Deploy (or hot-swap) the scorer and wait until /healthz answers; returns the served model.

    ``address``: None = the local head (started when none runs and ``start_head``);
    a Ray address (HOST:6379, ``auto``, ``ray://...``) = join that cluster with
    ``ray.init``. Job-server URLs (http://HEAD:8265) never reach here: the command
    submits itself as a Ray job (jobs/submit.py) and this runs inside that job.
    """
    from ray import serve

    from cluster.modeling import resolve_model
    from cluster.registry import Registry
    from cluster.runtime import head_running, head_up, init_ray

    registry = Registry()
    ref = resolve_model(spec.model, registry)
    if ref.labels is None:
        raise UserError(
            f"model {ref.model_id} has no id2label: serve a fine-tuned classifier, not a bare encoder "
            "(fine-tune it with `evalctl sweep` first)"
        )
    check_spec(spec)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and start_head and not head_running():
        head_up()  # Serve must outlive this command: an embedded Ray would die with it
    init_ray(address)
    remote_host = _remote_host(address)
    serve.start(http_options={"host": "0.0.0.0" if remote_host else spec.host, "port": spec.port})
    args = {**to_dict(spec), "path": str(ref.path), "model_id": ref.model_id, "home": str(registry.home)}
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{remote_host or _local_host(spec.host)}:{spec.port}"
    wait_until_serving(url, ref.model_id, timeout_s)
    return {"url": url, "model_id": ref.model_id, "labels": ref.labels}


def build_app(args: dict):
    """serve.app:build_app, reached by its import path (jobs never import serve/)."""
    import importlib

    module, attr = IMPORT_PATH.split(":")
    return getattr(importlib.import_module(module), attr)(args)


def _local_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1", "localhost", "") else host


def _remote_host(address: str | None) -> str | None:
    """The host of a Ray address on another machine (Serve's proxy must listen there), else None."""
    if not address or address in ("auto", "local"):
        return None
    host = address.split("://")[-1].rsplit(":", 1)[0]
    try:  # an address of this machine binds; so does a head joined from inside a submitted job
        with socket.socket() as s:
            s.bind((host, 0))
        return None
    except OSError:
        return host


def wait_until_serving(url: str, model_id: str, timeout_s: float) -> None:
    """Poll /healthz until the new model answers (a hot swap first answers with the old one)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=5)
            if r.status_code == 200 and r.json().get("model") == model_id:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise UserError(
        f"{url} did not serve model {model_id} within {timeout_s:.0f}s; "
        "see `evalctl serve status` and the replica logs (`ray logs` / the dashboard)"
    )


def check_spec(spec: ServeSpec) -> None:
    """Refuse settings Serve would reject later (or that make no sense) with one clear line."""
    for name in ("max_batch_size", "replicas", "max_texts", "max_chars", "max_length", "port"):
        if getattr(spec, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(spec, name)}")
    if spec.cpus_per_replica < 0 or (spec.gpus_per_replica or 0) < 0:
        raise UserError("--cpus-per-replica and --gpus-per-replica must be 0 or more")
    lo, hi = spec.autoscale_min, spec.autoscale_max
    if (lo, hi) != (None, None) and (lo is None or hi is None or not 0 <= lo <= hi or hi < 1):
        raise UserError(f"--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1, got {lo}:{hi}")
    if spec.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms must be 0 or more, got {spec.batch_wait_ms}")


def status(address: str | None = None, port: int = 8000) -> dict:
    """Serve's view of the application, plus the model /healthz names (no head = nothing served)."""
    from ray import serve

    if not _connect(address):
        return {
            "status": "NOT_RUNNING",
            "detail": "no local Ray head (start one with `evalctl serve deploy`)",
        }
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return {"status": "NOT_DEPLOYED"}
    out = {
        "status": str(getattr(app.status, "value", app.status)),
        "deployments": {
            name: {
                "status": str(getattr(d.status, "value", d.status)),
                "replicas": {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()},
            }
            for name, d in app.deployments.items()
        },
    }
    url = f"http://{_remote_host(address) or '127.0.0.1'}:{port}"
    try:
        out.update(url=url, model=httpx.get(f"{url}/healthz", timeout=5).json().get("model"))
    except (httpx.HTTPError, ValueError):
        out.update(url=url, model=None)
    return out


def stop(address: str | None = None) -> bool:
    """Delete the application (the head keeps running; `evalctl cluster down` stops it)."""
    from ray import serve

    if not _connect(address) or APP_NAME not in serve.status().applications:
        return False
    serve.delete(APP_NAME)
    return True


def _connect(address: str | None) -> bool:
    """Join Ray (this process's, the given address, or the local head); False when there is none."""
    import ray

    from cluster.runtime import head_running, init_ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized() and address is None and not head_running():
        return False  # never start an embedded Ray just to find nothing served in it
    init_ray(address)
    return True


# ------------------------------------------------------------------ command line


@serve_app.command("deploy")
def deploy_command(
    model: str = typer.Option("best", help="Model dir, registered id or alias (best, serving)."),
    replicas: int = typer.Option(1, help="Fixed number of replicas."),
    autoscale: str | None = typer.Option(
        None, help="MIN:MAX replicas, autoscaled on ongoing requests per replica."
    ),
    target_ongoing_requests: float = typer.Option(16.0, help="Autoscaling target per replica."),
    max_batch_size: int = typer.Option(32, help="Texts per dynamic batch (1 = batching off)."),
    batch_wait_ms: float = typer.Option(
        50.0, help="Under concurrent load, how long a batch waits to fill (ms); a lone request never waits."
    ),
    max_texts: int = typer.Option(64, help="Texts per request (more: 413)."),
    max_chars: int = typer.Option(5000, help="Characters per text (more: 413)."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 (auto: bf16 where native)."),
    cpus_per_replica: float = typer.Option(1.0, help="CPUs (and torch threads) per replica."),
    gpus_per_replica: float | None = typer.Option(None, help="Default: 1 when the cluster has GPUs."),
    host: str = typer.Option("127.0.0.1", help="Interface Serve's HTTP proxy listens on."),
    port: int = typer.Option(8000, help="HTTP port of Serve's proxy."),
    address: str | None = typer.Option(
        None,
        help="Default: the local head (started if needed). http://HEAD:8265 submits a Ray job; "
        "HOST:6379 or ray://... joins that Ray directly.",
    ),
    wait: bool = typer.Option(False, help="With an http address: stream the job's logs."),
) -> None:
    """Put a model online (POST /v1/predict) and return once it answers; again = hot swap."""
    from jobs.submit import own_argv, submit_if_remote

    if submit_if_remote("jobs.deploy", ["deploy", *own_argv("serve", "deploy")], address, wait, [model]):
        return
    lo, hi = parse_autoscale(autoscale)
    spec = from_dict(
        ServeSpec,
        dict(
            model=model,
            replicas=replicas,
            autoscale_min=lo,
            autoscale_max=hi,
            target_ongoing_requests=target_ongoing_requests,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            max_texts=max_texts,
            max_chars=max_chars,
            precision=precision,
            cpus_per_replica=cpus_per_replica,
            gpus_per_replica=gpus_per_replica,
            host=host,
            port=port,
        ),
        where="serve deploy",
    )
    served = deploy(spec, address)
    console.print(f"serving {served['model_id']} ({', '.join(served['labels'])}) at {served['url']}")
    console.print(
        f'try: evalctl query "what a great flight"   |   docs: {served["url"]}/docs   |   '
        "stop: evalctl serve stop"
    )


def parse_autoscale(value: str | None) -> tuple[int | None, int | None]:
    """ "MIN:MAX" -> (MIN, MAX); None -> (None, None)."""
    if not value:
        return None, None
    try:
        lo, hi = (int(x) for x in value.split(":"))
    except ValueError:
        raise UserError(f"--autoscale must be MIN:MAX, e.g. 1:4; got {value!r}") from None
    return lo, hi


@serve_app.command("status")
def status_command(
    address: str | None = None, port: int = typer.Option(8000, help="HTTP port of Serve's proxy.")
) -> None:
    """Status of the served application: Serve's states, replicas, URL and model."""
    console.print_json(data=status(address, port))


@serve_app.command("stop")
def stop_command(address: str | None = None) -> None:
    """Stop serving (the Ray head stays up; `evalctl cluster down` stops it)."""
    console.print("stopped serving" if stop(address) else "nothing was being served")


if __name__ == "__main__":
    from jobs.entry import run

    run(serve_app, prog="python -m jobs.deploy")
