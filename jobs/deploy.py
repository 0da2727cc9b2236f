"""`evalctl serve deploy|status|stop`: put a model online on Ray Serve.

    evalctl serve deploy --model best [--replicas N | --autoscale MIN:MAX] [--config jobs/configs/serve.yaml]
    python -m jobs.deploy deploy --model best

The application is reached by its import path ``serve.app:build_app`` (jobs never import
serve/). Without --address, the persistent local head is started if none runs (Serve must
outlive this command). Deploying again with another model updates the running application in
place: Serve starts the new replicas, then drains the old ones, so no request fails meanwhile.

API key: the key in $EVALCLUSTER_API_KEY (or its _FILE) reaches the replicas as its SHA-256
digest only, also through a submitted job. A redeploy from a shell without the key keeps the
running application's key; ``--no-api-key`` turns auth off, and says so.
"""

from __future__ import annotations

import inspect
import os
import socket
import time

import httpx
import typer

from cluster.apikey import api_key, api_key_digest, digest_env
from cluster.clock import Phases, process_started_at
from cluster.errors import UserError
from cluster.specs.serve import ServeSpec
from jobs.entry import console
from jobs.serve_startup import log_startup
from jobs.spec_cli import Workload, options, spec_command

APP_NAME = "evalcluster"
DEPLOYMENT = "Scorer"
IMPORT_PATH = "serve.app:build_app"

serve_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Online scoring on Ray Serve.")


def deploy(
    spec: ServeSpec,
    address: str | None = None,
    start_head: bool = True,
    timeout_s: float = 300,
    no_api_key: bool = False,
) -> dict:
    """Deploy (or hot-swap) the scorer and wait until /healthz answers; returns the served model.

    ``address``: None = the local head (started when none runs and ``start_head``);
    a Ray address (HOST:6379, ``auto``, ``ray://...``) = join that cluster with
    ``ray.init``. Job-server URLs (http://HEAD:8265) never reach here: the command
    submits itself as a Ray job (jobs/submit.py) and this runs inside that job.
    """
    from ray import serve

    from cluster.models.resolve import resolve_model
    from cluster.ray.logs import quiet_logger
    from cluster.registry.record import Registry

    phases = Phases(start=process_started_at())
    phases.mark("command")
    if no_api_key and api_key(spec.api_key_env):
        raise UserError(f"${spec.api_key_env} holds an API key and --no-api-key was given: choose one")
    registry = Registry()
    ref = resolve_model(spec.model, registry)
    if ref.labels is None:
        raise UserError(
            f"model {ref.model_id} has no id2label: serve a fine-tuned classifier, not a bare encoder "
            "(fine-tune it with `evalctl sweep` first)"
        )
    phases.mark("resolved")
    address = join_cluster(address, start_head)
    phases.mark("connected")
    remote_host = _remote_host(address)
    start_serve("0.0.0.0" if remote_host else spec.host, spec.port)
    phases.mark("serve_started")
    key_sha256, auth = _auth(spec, no_api_key)
    app = build_app(_replica_args(spec, ref, registry, key_sha256))
    phases.mark("app_built")
    # Not serve.run: it polls the application's status once a second until RUNNING; the wait
    # below polls it every 0.1 s (with /healthz: which model answers, a hot swap's new one).
    target = serve.RunTarget(app, name=APP_NAME, route_prefix="/")
    with quiet_logger("ray.serve"):  # its "Connecting to existing Serve app" line: at INFO only
        serve.run_many([target], wait_for_applications_running=False)
    url = f"http://{remote_host or _local_host(spec.host)}:{spec.port}"
    wait_until_serving(url, ref.model_id, timeout_s)
    phases.mark("answered")
    log_startup(phases, APP_NAME, DEPLOYMENT)
    return {"url": url, "model_id": ref.model_id, "labels": ref.labels, "auth": auth}


def start_serve(host: str, port: int) -> None:
    """Start Serve (controller, HTTP proxy on host:port) on the joined cluster, or check that the
    running one listens there: Ray would only warn and keep its own address."""
    from ray import serve

    from cluster.ray.compat import serve_client
    from cluster.ray.logs import quiet_logger

    with quiet_logger("ray.serve"):
        serve.start(proxy_location=proxy_location(), http_options={"host": host, "port": port})
    running = serve_client().http_config
    if (running.host, running.port) != (host, port):
        raise UserError(
            f"Serve on this cluster listens on {running.host}:{running.port}, not {host}:{port}: deploy with "
            f"--host {running.host} --port {running.port}, or restart Serve there with "
            "`evalctl serve stop --shutdown` first"
        )


def _replica_args(spec: ServeSpec, ref, registry, key_sha256: str | None) -> dict:
    """What each replica is built with (serve/app.py: build_app): the spec, the resolved model."""
    return {
        **spec.model_dump(mode="json"),
        "path": ref.source.location,  # a URI in the artifact store: each node downloads it once
        "model_id": ref.model_id,
        "checksum": ref.checksum,
        "home": str(registry.home),
        "api_key_sha256": key_sha256,
    }


def join_cluster(address: str | None, start_head: bool) -> str | None:
    """Join the cluster at ``address`` (None: RAY_ADDRESS, else the local head, started if none runs
    and ``start_head``: Serve must outlive the command); returns the address joined."""
    from cluster.ray.runtime import head_running, head_up, init_ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and start_head and not head_running():
        head_up()  # Serve must outlive this command: an embedded Ray would die with it
    init_ray(address)
    return address


def proxy_location() -> str:
    """Where Serve runs its HTTP proxies: on every node with a replica (Ray's default), unless
    several nodes share one address (several raylets on one machine, as in tests): their
    proxies would all bind the same host:port, so then only the head's proxy runs.

    Replicas are spread over the nodes either way (Serve's default SPREAD scheduling), and a
    replica lost with its node is restarted by Serve on the capacity that is left.
    """
    import ray

    addresses = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    return "HeadOnly" if len(set(addresses)) < len(addresses) else "EveryNode"


def _auth(spec: ServeSpec, no_api_key: bool) -> tuple[str | None, str]:
    """(the key digest the new deployment gets, a line saying what that means)."""
    env = spec.api_key_env
    if no_api_key:
        was = running_key_digest(env) is not None
        return None, "API key: none, the endpoint is open" + (
            " (auth turned off by --no-api-key)" if was else ""
        )
    mine = api_key_digest(env)
    if mine:
        return mine, f"API key: required (from ${env})"
    running = running_key_digest(env)
    if running:
        return running, "API key: required, kept from the running deployment (--no-api-key turns it off)"
    return None, f"API key: none, the endpoint is open (set ${env} to require one)"


def running_key_digest(env: str) -> str | None:
    """The API key digest the running scorer checks (asked through a Serve handle); None = open or none."""
    from ray import serve

    if APP_NAME not in serve.status().applications:
        return None
    try:
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP_NAME)
        return handle.api_key_sha256.remote().result(timeout_s=60)
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot tell
        raise UserError(
            f"cannot tell whether the running {APP_NAME} application requires an API key "
            f"({type(exc).__name__}); set ${env} to deploy with a key, or pass --no-api-key"
        ) from exc


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
    """Wait (polling every 0.1 s) until Serve has the application RUNNING and /healthz answers
    with the new model (a hot swap first answers with the old one); a deployment Serve gave up
    on (its replicas failed to start) is said at once."""
    from ray import serve

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        app = serve.status().applications.get(APP_NAME)
        state = str(getattr(app.status, "value", app.status)) if app is not None else None
        if state == "DEPLOY_FAILED":
            message = (app.message or "").strip().splitlines()
            raise UserError(
                f"Serve could not start the scorer: {message[0] if message else state} "
                "(`evalctl serve status`; the replica logs: `ray logs` / the dashboard)"
            )
        if state == "RUNNING" and _answers(url, model_id):
            return
        time.sleep(0.1)
    raise UserError(
        f"{url} did not serve model {model_id} within {timeout_s:.0f}s; "
        "see `evalctl serve status` and the replica logs (`ray logs` / the dashboard)"
    )


def _answers(url: str, model_id: str) -> bool:
    try:
        r = httpx.get(f"{url}/healthz", timeout=5)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.json().get("model") == model_id


def status(address: str | None = None, port: int | None = None) -> dict:
    """Serve's view of the application, plus the model /healthz names (no head = nothing served);
    ``port``: of Serve's proxy, by default where the running Serve listens."""
    from ray import serve

    from cluster.ray.compat import serve_client

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
    http = getattr(serve_client(required=False), "http_config", None)  # where the running Serve listens
    port = port or (http.port if http else 8000)
    url = f"http://{_remote_host(address) or _local_host(http.host if http else '')}:{port}"
    try:
        out.update(url=url, model=httpx.get(f"{url}/healthz", timeout=5).json().get("model"))
    except (httpx.HTTPError, ValueError):
        out.update(url=url, model=None)
    return out


def stop(address: str | None = None, shutdown: bool = False) -> bool:
    """Delete the application (the head keeps running); with ``shutdown`` Serve's controller and
    proxies too (the next deploy starts Serve on its own address). True if something stopped."""
    from ray import serve

    from cluster.ray.compat import serve_client

    if not _connect(address) or serve_client(required=False) is None:
        return False  # no Serve on this cluster
    if shutdown:
        serve.shutdown()  # the application goes with it
        return True
    served = APP_NAME in serve.status().applications
    if served:
        serve.delete(APP_NAME)
    return served


def _connect(address: str | None) -> bool:
    """Join Ray (this process's, the given address, or the local head); False when there is none."""
    import ray

    from cluster.ray.runtime import head_running, init_ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized() and address is None and not head_running():
        return False  # never start an embedded Ray just to find nothing served in it
    init_ray(address)
    return True


# ------------------------------------------------------------------ command line


def _run(spec: ServeSpec, address: str | None = None, no_api_key: bool = False) -> None:
    served = deploy(spec, address, no_api_key=no_api_key)
    console.print(f"serving {served['model_id']} ({', '.join(served['labels'])}) at {served['url']}")
    console.print(served["auth"])
    console.print(
        f'try: evalctl query "what a great flight"   |   docs: {served["url"]}/docs   |   '
        "stop: evalctl serve stop"
    )


def _job_extras(spec: ServeSpec, extras: dict) -> tuple[list[str], dict[str, str]]:
    """A submitted deploy gets this shell's key as a digest only, and --no-api-key when given."""
    if extras.get("no_api_key"):
        return ["--no-api-key"], {}
    return [], digest_env(spec.api_key_env)


NO_API_KEY = inspect.Parameter(
    "no_api_key",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Option(False, "--no-api-key", help="Serve without an API key, even if one is running."),
    annotation=bool,
)
WORKLOAD = Workload(
    spec=ServeSpec,
    options=options(ServeSpec, ["*"]),
    run=_run,
    module="jobs.deploy",
    extras=[NO_API_KEY],
    submit_argv=["deploy"],
    job_extras=_job_extras,
    address_help="Default: the local head (started if needed). http://HEAD:8265 submits a Ray job; "
    "HOST:6379 or ray://... joins that Ray directly.",
)
deploy_command = serve_app.command("deploy")(
    spec_command(
        WORKLOAD, "Put a model online (POST /v1/predict) and return once it answers; again = hot swap."
    )
)


@serve_app.command("status")
def status_command(
    address: str | None = None,
    port: int | None = typer.Option(None, help="HTTP port of Serve's proxy (default: where Serve listens)."),
) -> None:
    """Status of the served application: Serve's states, replicas, URL and model."""
    console.print_json(data=status(address, port))


@serve_app.command("stop")
def stop_command(
    address: str | None = None,
    shutdown: bool = typer.Option(
        False, "--shutdown", help="Also stop Serve's controller and HTTP proxy (to restart it elsewhere)."
    ),
) -> None:
    """Stop serving (the Ray head stays up; `evalctl cluster down` stops it)."""
    stopped = stop(address, shutdown)
    done = "stopped Serve" if shutdown else "stopped serving"
    console.print(done if stopped else "nothing was being served")


if __name__ == "__main__":
    from jobs.entry import run

    run(serve_app, prog="python -m jobs.deploy")
