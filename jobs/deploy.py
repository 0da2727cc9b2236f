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
import time

import httpx
import typer

from cluster.config import ServeSpec, to_dict
from cluster.errors import UserError
from jobs.entry import console

APP_NAME = "evalcluster"
IMPORT_PATH = "serve.app:build_app"

serve_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Online scoring on Ray Serve.")


def deploy(
    spec: ServeSpec, address: str | None = None, start_head: bool = True, timeout_s: float = 300
) -> dict:
    """Deploy (or hot-swap) the scorer and wait until /healthz answers; returns the served model."""
    import importlib

    from ray import serve

    from cluster.modeling import resolve_model
    from cluster.registry import Registry
    from cluster.runtime import head_running, head_up, init_ray

    registry = Registry()
    ref = resolve_model(spec.model, registry)
    if ref.labels is None:
        raise UserError(
            f"model {ref.model_id} has no id2label: serve a fine-tuned classifier, not a bare encoder"
        )
    check_spec(spec)
    if address is None and start_head and not os.environ.get("RAY_ADDRESS") and not head_running():
        head_up()
    init_ray(address)
    serve.start(http_options={"host": spec.host, "port": spec.port})
    args = {**to_dict(spec), "path": str(ref.path), "model_id": ref.model_id, "home": str(registry.home)}
    if os.environ.get("EVALCLUSTER_API_KEY"):  # replicas may not share this shell's environment
        args["api_key"] = os.environ["EVALCLUSTER_API_KEY"]
    module, attr = IMPORT_PATH.split(":")
    app = getattr(importlib.import_module(module), attr)(args)  # by path: jobs never import serve/
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if spec.host in ('0.0.0.0', '127.0.0.1') else spec.host}:{spec.port}"
    wait_until_serving(url, ref.model_id, timeout_s)
    return {"url": url, "model_id": ref.model_id, "labels": ref.labels}


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
    raise RuntimeError(f"{url} did not serve model {model_id} within {timeout_s:.0f}s")


def check_spec(spec: ServeSpec) -> None:
    if spec.max_batch_size < 1 or spec.replicas < 1:
        raise UserError("--max-batch-size and --replicas must be at least 1")
    if spec.autoscale_min is not None and not 0 <= spec.autoscale_min <= (spec.autoscale_max or 0):
        raise UserError(
            f"--autoscale MIN:MAX needs 0 <= MIN <= MAX, got {spec.autoscale_min}:{spec.autoscale_max}"
        )
    if spec.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms must be 0 or more, got {spec.batch_wait_ms}")


def status(address: str | None = None) -> dict:
    """Serve's view of the application (no head = nothing served)."""
    from ray import serve

    from cluster.runtime import head_running, init_ray

    if address is None and not head_running():
        return {"status": "NOT_RUNNING"}
    init_ray(address)
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return {"status": "NOT_DEPLOYED"}
    return {"status": str(app.status), "deployments": {k: str(v.status) for k, v in app.deployments.items()}}


def stop(address: str | None = None) -> bool:
    """Delete the application (the head keeps running; `evalctl cluster down` stops it)."""
    from ray import serve

    from cluster.runtime import head_running, init_ray

    if address is None and not head_running():
        return False
    init_ray(address)
    if APP_NAME not in serve.status().applications:
        return False
    serve.delete(APP_NAME)
    return True


# ------------------------------------------------------------------ command line


@serve_app.command("deploy")
def deploy_command(
    model: str = typer.Option("best", help="Model dir, registered id or alias (best, serving)."),
    replicas: int = typer.Option(1, help="Fixed number of replicas."),
    autoscale: str | None = typer.Option(None, help="MIN:MAX replicas, autoscaled on ongoing requests."),
    max_batch_size: int = typer.Option(32, help="Texts per dynamic batch."),
    batch_wait_ms: float = typer.Option(10.0, help="How long a batch waits to fill (ms)."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16."),
    gpus_per_replica: float | None = typer.Option(None, help="Default: 1 when the cluster has GPUs."),
    port: int = typer.Option(8000, help="HTTP port of Serve's proxy."),
    address: str | None = typer.Option(
        None, help="http://HEAD:8265 submits a job; host:port joins that Ray."
    ),
    wait: bool = typer.Option(False, help="With an http address: stream the job's logs."),
) -> None:
    """Put a model online (POST /v1/predict) and return once it answers."""
    from jobs.submit import own_argv, submit_if_remote

    if submit_if_remote("jobs.deploy", ["deploy", *own_argv("serve", "deploy")], address, wait, [model]):
        return
    lo = hi = None
    if autoscale:
        try:
            lo, hi = (int(x) for x in autoscale.split(":"))
        except ValueError:
            raise UserError(f"--autoscale must be MIN:MAX, e.g. 1:4; got {autoscale!r}") from None
    spec = ServeSpec(
        model=model,
        replicas=replicas,
        autoscale_min=lo,
        autoscale_max=hi,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        precision=precision,
        gpus_per_replica=gpus_per_replica,
        port=port,
    )
    served = deploy(spec, address)
    console.print(f"serving {served['model_id']} ({', '.join(served['labels'])}) at {served['url']}")
    console.print(
        f'try: evalctl query "what a great flight"   |   docs: {served["url"]}/docs   |   '
        "stop: evalctl serve stop"
    )


@serve_app.command("status")
def status_command(address: str | None = None) -> None:
    """Status of the served application."""
    console.print_json(data=status(address))


@serve_app.command("stop")
def stop_command(address: str | None = None) -> None:
    """Stop serving (the Ray head stays up)."""
    console.print("stopped serving" if stop(address) else "nothing was being served")


if __name__ == "__main__":
    from jobs.entry import run

    run(serve_app, prog="python -m jobs.deploy")
