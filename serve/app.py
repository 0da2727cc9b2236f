"""The online scorer: one Ray Serve deployment with a FastAPI ingress.

    POST /v1/predict {"texts": [...]}   -> labels, scores, probabilities
    POST /v1/explain {"text": "..."}    -> gradient x input attributions per token
    GET  /v1/model                      -> id, labels, lineage, evaluation metrics
    GET  /healthz                       -> 200 once the model answers

Each text of a request goes through ``@serve.batch``, so texts of concurrent
requests share forward passes, which run through the same length-sorted,
dynamically padded ``predict_proba`` as offline evaluation: the same model and
precision give the same probabilities online and offline.

``build_app(args)`` is the import path for ``serve run``/``serve deploy``
(serve/config.yaml) and for ``evalctl serve deploy``.
"""

import asyncio
import hashlib
import hmac

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.apikey import api_key_digest  # noqa: F401  (part of this module's API)
from cluster.config import ServeSpec, load_spec
from serve.schemas import (
    ExplainRequest,
    ExplainResponse,
    Health,
    ModelInfo,
    Prediction,
    PredictRequest,
    PredictResponse,
)

APP_NAME = "evalcluster"
# Resolved values passed beside the ServeSpec fields.
RUNTIME_ARGS = ("path", "model_id", "home", "api_key_sha256")
api = FastAPI(
    title="evalcluster scorer", version="1", description="Online scoring of a fine-tuned classifier."
)


@api.exception_handler(RequestValidationError)
async def _invalid_payload(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each problem named by location (invalid JSON, bad UTF-8, wrong types...)."""
    problems = [
        {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"error": "invalid request", "detail": problems})


def _spec(args: dict) -> ServeSpec:
    return load_spec(ServeSpec, {k: v for k, v in args.items() if k not in RUNTIME_ARGS}, where="serve args")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's body-parsing failure (e.g. bytes that are not UTF-8) named plainly."""
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "request body is not valid JSON text (it must be UTF-8 encoded JSON)"
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


def _latest_metrics(home: str | None, model_id: str) -> dict | None:
    """Headline metrics of the latest finished evaluation of this model in the registry."""
    from cluster.registry import Registry

    try:
        runs = Registry(home).list_runs(kind="evaluate", status="finished")
    except Exception:  # noqa: BLE001 - the registry may not be reachable from every node
        return None
    run = next((r for r in runs if r["model_id"] == model_id), None)
    return {"run_id": run["id"], **(run["metrics"] or {})} if run else None


# Helpers the replica calls are defined above the class: Serve pickles it when it is decorated.
def batch_wait_s(spec: ServeSpec, last_batch: int) -> float:
    """How long the next batch waits to fill: ``batch_wait_ms`` while the last batch held
    more than one text (concurrent load: on 2 cores a 50 ms wait doubled requests/s at
    32 clients, benchmarks/serve_load.py), else 0 so a lone request never waits."""
    return spec.batch_wait_ms / 1000 if last_batch > 1 else 0.0


@serve.deployment(name="Scorer", max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(api)
class Scorer:
    """One replica: one model, dynamic batching, explanations."""

    def __init__(self, args: dict):
        import torch

        from cluster.modeling import load_classifier, pick_device, read_lineage, resolve_precision
        from cluster.runtime import worker_threads

        self.spec = _spec(args)
        torch.set_num_threads(worker_threads())  # the CPUs Ray gave this replica (Ray may leave torch at 1)
        self.device = pick_device(self.spec.gpus_per_replica)
        self.model, self.tokenizer, self.labels = load_classifier(args["path"], device=self.device)
        self.precision = resolve_precision(self.spec.precision, self.device)
        self.model_id, self.path = args["model_id"], args["path"]
        self.lineage = read_lineage(args["path"])
        self.home = args.get("home")
        # "" = deployed without a key on purpose (--no-api-key); None = the replica's own env decides
        sent = args.get("api_key_sha256")
        self.key_digest = (sent if sent is not None else api_key_digest(self.spec.api_key_env)) or None
        self._batch.set_max_batch_size(self.spec.max_batch_size)
        self._batch.set_batch_wait_timeout_s(0.0)  # idle until the first batch shows concurrent load

    # -------------------------------------------------------------- model calls

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batch(self, texts: list[str]) -> list:
        """A batch of single texts from concurrent requests -> their probability rows."""
        probs = await asyncio.to_thread(self._probs, texts)  # the event loop keeps accepting requests
        self._batch.set_batch_wait_timeout_s(self.batch_wait_s(len(texts)))
        return list(probs)

    def batch_wait_s(self, last_batch: int) -> float:
        return batch_wait_s(self.spec, last_batch)

    def api_key_sha256(self) -> str | None:
        """The digest of the API key this replica requires (None: open); asked by a redeploy."""
        return self.key_digest

    def _probs(self, texts: list[str]):
        from cluster.modeling import predict_proba

        return predict_proba(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.spec.max_length,
            precision=self.precision,
            batch_size=max(len(texts), 1),
        )

    async def check_health(self) -> None:
        """Serve's health check: a real forward pass (through the batch queue, so the model
        is only ever called from one thread)."""
        await self._batch("health check")

    def _ref(self) -> dict:
        return {"id": self.model_id, "labels": self.labels}

    def _authorize(self, authorization: str | None) -> None:
        if self.key_digest is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self.key_digest):
            raise HTTPException(
                401,
                detail="missing or wrong API key: send 'Authorization: Bearer KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _check_limits(self, texts: list[str]) -> None:
        if len(texts) > self.spec.max_texts:
            raise HTTPException(413, detail=f"too many texts: {len(texts)} > limit {self.spec.max_texts}")
        for i, t in enumerate(texts):
            if len(t) > self.spec.max_chars:
                raise HTTPException(
                    413, detail=f"texts[{i}] has {len(t)} characters > limit {self.spec.max_chars}"
                )
            if not t.strip():
                raise HTTPException(422, detail=f"texts[{i}] is empty")

    # -------------------------------------------------------------- HTTP routes

    @api.post("/v1/predict", response_model=PredictResponse)
    async def predict(self, req: PredictRequest, authorization: str | None = Header(None)) -> PredictResponse:
        self._authorize(authorization)
        self._check_limits(req.texts)
        rows = await asyncio.gather(*(self._batch(t) for t in req.texts))
        preds = [
            Prediction(
                label=self.labels[int(p.argmax())],
                score=float(p.max()),
                probs={lab: float(x) for lab, x in zip(self.labels, p, strict=True)},
            )
            for p in rows
        ]
        return PredictResponse(model=self._ref(), predictions=preds)

    @api.post("/v1/explain", response_model=ExplainResponse)
    async def explain(self, req: ExplainRequest, authorization: str | None = Header(None)) -> ExplainResponse:
        self._authorize(authorization)
        self._check_limits([req.text])
        return await asyncio.to_thread(self._explain, req.text)

    def _explain(self, text: str) -> ExplainResponse:
        """Gradient x input over the input embeddings, summed over the hidden size, per token."""
        import torch

        enc = self.tokenizer(text, truncation=True, max_length=self.spec.max_length, return_tensors="pt")
        enc = enc.to(self.device)
        with torch.enable_grad():
            emb = self.model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
            logits = self.model(inputs_embeds=emb, attention_mask=enc["attention_mask"]).logits[0].float()
            probs = torch.softmax(logits, -1)
            pred = int(probs.argmax())
            (grad,) = torch.autograd.grad(logits[pred], emb)
        attr = (grad * emb).sum(-1)[0].tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        return ExplainResponse(
            model=self._ref(),
            label=self.labels[pred],
            score=float(probs[pred]),
            method="gradient x input (embeddings)",
            tokens=[{"token": t, "attribution": a} for t, a in zip(tokens, attr, strict=True)],
        )

    @api.get("/v1/model", response_model=ModelInfo)
    async def model_info(self, authorization: str | None = Header(None)) -> ModelInfo:
        self._authorize(authorization)
        return ModelInfo(
            id=self.model_id,
            labels=self.labels,
            path=str(self.path),
            precision=self.precision,
            lineage=self.lineage,
            metrics=_latest_metrics(self.home, self.model_id),
            limits={"max_texts": self.spec.max_texts, "max_chars": self.spec.max_chars},
        )

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        await self._batch("health check")
        return Health(status="ok", model=self.model_id)


# ------------------------------------------------------------------ building the application


def deployment_options(spec: ServeSpec) -> dict:
    """Replicas or autoscaling, batching-compatible concurrency, GPU per replica when available."""
    import ray

    gpus = spec.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU") else 0.0
    opts = {
        "ray_actor_options": {"num_cpus": spec.cpus_per_replica, "num_gpus": gpus},
        # >= the batch size, else batches never fill; and at least 64, because requests
        # beyond the limit queue in the proxy: with a limit of 8, 32 clients got 8 requests/s
        # from a no-batching replica that served 8 clients 54/s (benchmarks/serve_load.py).
        "max_ongoing_requests": max(2 * spec.max_batch_size, 64),
    }
    if spec.autoscale is not None:
        opts["autoscaling_config"] = {
            "min_replicas": spec.autoscale[0],
            "max_replicas": spec.autoscale[1],
            "target_ongoing_requests": spec.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = spec.replicas
    return opts


def build_app(args: dict):
    """Serve application for ``args``: ServeSpec fields; ``model`` is resolved unless a path is given."""
    args = app_args(args)
    return Scorer.options(**deployment_options(_spec(args))).bind(args)


def app_args(args: dict) -> dict:
    """What each replica is constructed with: the ServeSpec fields (validated), the resolved
    model path and id, and the API key's digest (never the key)."""
    from cluster.errors import UserError
    from cluster.modeling import resolve_model
    from cluster.registry import Registry

    args = dict(args)
    spec = _spec(args)
    if "path" not in args:
        ref = resolve_model(spec.model, Registry(args.get("home")))
        if ref.labels is None:
            raise UserError(
                f"model {ref.model_id} has no id2label: serve a fine-tuned classifier, not a bare encoder"
            )
        args.update(path=str(ref.path), model_id=ref.model_id)
    if args.get("api_key_sha256") is None:  # the key of whoever builds the app (serve deploy config.yaml)
        args["api_key_sha256"] = api_key_digest(spec.api_key_env)
    return args
