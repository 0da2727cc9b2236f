"""What every evalcluster HTTP application shares: the API key guard, JSON errors, the model's metrics.

The scorer (serve/app.py) and the translator (serve/translate.py) are two Serve ingress
deployments, each with its own FastAPI app; :func:`install` gives an app the same middleware and
error handlers, so both answer alike: the API key is checked before anything else (the body is
not even read without it) on every path but /healthz; an unexpected error is a JSON 500 naming
the request id (Serve's ``X-Request-ID``), which the replica log has with the traceback.
"""

import hashlib
import hmac
import logging
import uuid

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.specs.parse import load_spec
from cluster.specs.serve import ServeSpec

# Resolved values a replica is built with beside the ServeSpec fields (serve/app.py ``app_args``).
RUNTIME_ARGS = ("path", "model_id", "checksum", "home", "api_key_sha256", "task")
OPEN_PATHS = frozenset({"/healthz"})  # answered without the API key
# Serve's replica logger: its records land in the replica log with Serve's request id.
logger = logging.getLogger("ray.serve")


def serve_spec(args: dict) -> ServeSpec:
    """The ServeSpec of a replica's ``args`` (the resolved values left out)."""
    return load_spec(ServeSpec, {k: v for k, v in args.items() if k not in RUNTIME_ARGS}, where="serve args")


def check_text_limits(spec: ServeSpec, texts: list[str]) -> None:
    """413 when a request has more texts than ``spec.max_texts`` or one longer than ``spec.max_chars``
    (the texts themselves were checked by the request schema)."""
    if len(texts) > spec.max_texts:
        raise HTTPException(413, detail=f"too many texts: {len(texts)} > limit {spec.max_texts}")
    for i, t in enumerate(texts):
        if len(t) > spec.max_chars:
            raise HTTPException(413, detail=f"texts[{i}] has {len(t)} characters > limit {spec.max_chars}")


def install(api: FastAPI) -> FastAPI:
    """``api`` with the guard middleware and the JSON error handlers."""
    api.middleware("http")(guard)
    api.exception_handler(RequestValidationError)(invalid_payload)
    api.exception_handler(StarletteHTTPException)(http_error)
    return api


async def guard(request: Request, call_next) -> JSONResponse:
    """Runs before routing and body parsing: the API key check (so a request without the key
    learns nothing, not even the schema from a 422); and any unexpected error as JSON."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex  # set by Serve's proxy
    try:  # fails closed: no key digest to compare with is a 500, never an open door
        authorized = key_matches(replica_key_digest(), request.headers.get("authorization"))
        if request.url.path not in OPEN_PATHS and not authorized:
            return JSONResponse(
                status_code=401,
                content={"detail": "missing or wrong API key: send 'Authorization: Bearer KEY'"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)
    except Exception:
        logger.exception("request %s failed", request_id)
        return JSONResponse(
            status_code=500,
            content={
                "detail": "internal error; the server log has it under this request id",
                "request_id": request_id,
            },
        )


def replica_key_digest() -> str | None:
    """The API key digest of the replica serving this request (None: no key configured)."""
    return serve.get_replica_context().servable_object.key_digest


def key_matches(digest: str | None, authorization: str | None) -> bool:
    """Whether ``Authorization: Bearer KEY`` carries the key whose SHA-256 is ``digest``
    (always True when no key is configured); compared in constant time."""
    if digest is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        hashlib.sha256(token.strip().encode()).hexdigest(), digest
    )


async def invalid_payload(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each problem named by location (invalid JSON, bad UTF-8, wrong types...)."""
    problems = [
        {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"error": "invalid request", "detail": problems})


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Refusals as JSON; FastAPI's body-parsing failure (e.g. bytes that are not UTF-8) named
    plainly; a 5xx (e.g. /healthz's 503) names the request id, as every 5xx does."""
    content = {"detail": exc.detail}
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        content["detail"] = "request body is not valid JSON text (it must be UTF-8 encoded JSON)"
    if exc.status_code >= 500:
        content["request_id"] = request.headers.get("x-request-id") or uuid.uuid4().hex
    return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers)


def latest_metrics(home: str | None, model_id: str) -> dict | None:
    """Headline metrics of the latest finished evaluation of this model in the registry."""
    from cluster.registry.record import Registry

    try:
        runs = Registry(home).list_runs(kind="evaluate", status="finished")
    except Exception:  # noqa: BLE001 - the registry may not be reachable from every node
        return None
    run = next((r for r in runs if r["model_id"] == model_id), None)
    return {"run_id": run["id"], **(run["metrics"] or {})} if run else None
