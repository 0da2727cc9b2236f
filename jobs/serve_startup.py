"""Where `evalctl serve deploy`'s time goes: the command's own marks and the new replica's,
as consecutive steps (logged at INFO: `evalctl --log-level INFO serve deploy ...`;
benchmarks/cold_start.py prints their medians)."""

from __future__ import annotations

import logging

from cluster.clock import Phases

log = logging.getLogger(__name__)

STARTUP = (  # (what the breakdown calls it, from mark, to mark): consecutive steps
    ("cli_start_s", "start", "command"),  # interpreter and imports
    ("resolve_s", "command", "resolved"),  # the registry, the model's directory
    ("connect_s", "resolved", "connected"),  # import ray, ray.init (the head started if none ran)
    ("serve_start_s", "connected", "serve_started"),  # Serve's controller and proxy (if not running)
    ("build_s", "serve_started", "app_built"),  # serve/app.py imported here, the app built
    ("replica_process_s", "app_built", "replica_process"),  # handed to Serve; Ray starts a worker
    ("replica_imports_s", "replica_process", "replica_init"),  # Ray, Serve, FastAPI, serve/app.py
    ("torch_import_s", "replica_init", "replica_torch"),
    ("model_load_s", "replica_torch", "replica_model"),  # transformers imported, weights loaded
    ("probe_s", "replica_model", "replica_ready"),  # the first forward pass
    ("until_answered_s", "replica_ready", "answered"),  # Serve routing to it; /healthz polled
)


def log_startup(phases: Phases, app_name: str, deployment: str) -> dict:
    """Where `serve deploy`'s time went, in seconds (logged at INFO: `evalctl --log-level INFO`);
    the replica's steps are one replica's own marks, asked only when they are logged."""
    if not log.isEnabledFor(logging.INFO):
        return {}
    from ray import serve

    try:
        handle = serve.get_deployment_handle(deployment, app_name=app_name)
        marks = handle.startup_marks.remote().result(timeout_s=30)
    except Exception as exc:  # noqa: BLE001 - a breakdown without the replica's part
        log.info("replica start-up marks not available: %s", exc)
        marks = {}
    for name, at in marks.items():  # a reused worker process started before it was asked for
        phases.mark(f"replica_{name}", max(at, phases.marks["app_built"]) if name == "process" else at)
    took = {name: phases.between(a, b) for name, a, b in STARTUP}
    took = {k: v for k, v in took.items() if v is not None}
    took["total_s"] = phases.between("start", "answered")
    log.info("serve deploy start-up (s): %s", ", ".join(f"{k} {v:.2f}" for k, v in took.items()))
    return took
