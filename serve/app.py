"""The online scorer: one Ray Serve deployment with a FastAPI ingress.

    POST /v1/predict {"texts": [...]}   -> labels, scores, probabilities
    POST /v1/predict {"images": [...]}  -> the same for an image model (base64 PNG/JPEG)
    POST /v1/explain {"text": "..."}    -> gradient x input attributions per token
    POST /v1/explain {"image": "..."}   -> gradient x input on a bounded map: PNG heat map and overlay
    POST /v1/segment {"images": [...]}  -> a segmentation model's masks and class shares (serve/segment.py)
    GET  /v1/model                      -> id, labels, lineage, evaluation metrics
    GET  /healthz                       -> 200 while the last health check passed

The request's field must match the deployed model's modality (texts to an image
model: 422 naming "images"); images are decoded and checked in serve/images.py.
Each text (or decoded image) of a request goes through ``@serve.batch``, so texts of concurrent
requests share forward passes, which run through the same length-sorted,
dynamically padded ``predict_proba`` as offline evaluation: the same model and
precision give the same probabilities online and offline.

One request never fails another: every text is checked before it is batched
(serve/schemas.py), and a batch that fails anyway is scored text by text, so
only the failing text's request gets the error. With an API key configured, the
key is checked before anything else (the body is not even read without it), on
every path but /healthz. An unexpected error is a JSON 500 naming the request id
(Serve's ``X-Request-ID``), which the replica log has with the traceback.

``build_app(args)`` is the import path for ``serve run``/``serve deploy``
(serve/config.yaml) and for ``evalctl serve deploy``.
"""

import asyncio
import base64
import time

from fastapi import FastAPI, HTTPException
from ray import serve

from cluster.apikey import api_key_digest
from cluster.specs.serve import ServeSpec
from serve.batching import row_or_raise, score_each
from serve.http import check_text_limits, install, latest_metrics, serve_spec
from serve.images import decode_request, explain_response, image_limits, request_bytes, require_modality
from serve.schemas import (
    ExplainRequest,
    ExplainResponse,
    Health,
    ModelInfo,
    Prediction,
    PredictRequest,
    PredictResponse,
)
from serve.segment import SegmentRoutes, segment_router

APP_NAME = "evalcluster"
# The API key guard and JSON errors: serve/http.py (shared with serve/translate.py's translator).
api = install(
    FastAPI(title="evalcluster scorer", version="1", description="Online scoring of a fine-tuned classifier.")
)
api.include_router(segment_router)  # before the ingress below turns its routes into the Scorer's


def batch_wait_s(spec: ServeSpec, last_batch: int) -> float:
    """How long the next batch waits to fill: ``batch_wait_ms`` while the last batch held
    more than one text (concurrent load: on 2 cores a 50 ms wait doubled requests/s at
    32 clients, benchmarks/serve_load.py), else 0 so a lone request never waits."""
    return spec.batch_wait_ms / 1000 if last_batch > 1 else 0.0


# A 1x1 gray PNG: the probe an image replica's health check classifies.
_GRAY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg=="
)


# Helpers the deployment uses are defined above it: Serve copies the class when it is
# decorated, with the module's names as they are at that point.
@serve.deployment(name="Scorer", max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(api)
class Scorer(SegmentRoutes):
    """One replica: one model, dynamic batching, explanations."""

    def __init__(self, args: dict):
        from cluster.clock import process_started_at

        # Wall-clock marks of this replica's start (`evalctl serve deploy` prints them).
        self.started = {"process": process_started_at(), "init": time.time()}
        import torch

        self.started["torch"] = time.time()
        from cluster.models.cache import ModelSource
        from cluster.models.device import pick_device, resolve_precision
        from cluster.models.modality import load_trained
        from cluster.models.modeldir import read_lineage
        from cluster.ray.runtime import worker_threads

        self.spec = serve_spec(args)
        torch.set_num_threads(worker_threads())  # the CPUs Ray gave this replica (Ray may leave torch at 1)
        self.device = pick_device(self.spec.gpus_per_replica)
        # ``path``: a directory, or a URI in the artifact store: downloaded once per node, verified
        # against the checksum recorded at registration, then loaded from the node's cache.
        local = ModelSource(args["path"], args["model_id"], args.get("checksum")).local_path()
        self.clf = load_trained(local, device=self.device)
        self.model, self.tokenizer, self.labels = self.clf.model, self.clf.tokenizer, self.clf.labels
        self.modality = self.clf.modality
        self.precision = resolve_precision(self.spec.precision, self.device)
        self.model_id, self.path = args["model_id"], args["path"]
        self.lineage = read_lineage(local)
        self.home = args.get("home")
        # "" = deployed without a key on purpose (--no-api-key); None = the replica's own env decides
        sent = args.get("api_key_sha256")
        self.key_digest = (sent if sent is not None else api_key_digest(self.spec.api_key_env)) or None
        self._batch.set_max_batch_size(self.spec.max_batch_size)
        self._batch.set_batch_wait_timeout_s(0.0)  # idle until the first batch shows concurrent load
        self.started["model"] = time.time()
        self.probe = "health check" if self.modality == "text" else self.clf.prepare([_GRAY_PNG]).inputs[0]
        self._probs([self.probe])  # a replica whose model cannot run never starts
        self.health_failed_at: str | None = None  # when Serve's last health check failed
        self.started["ready"] = time.time()

    # -------------------------------------------------------------- model calls

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batch(self, texts: list[str]) -> list:
        """A batch of single texts from concurrent requests -> their probability rows
        (an exception in the place of a text that failed: see :func:`score_each`)."""
        rows = await asyncio.to_thread(score_each, self._probs, texts)  # the loop keeps accepting
        self._batch.set_batch_wait_timeout_s(self.batch_wait_s(len(texts)))
        return rows

    async def _score(self, text: str):
        """One text's probability row, through the batch queue; its own error if it failed."""
        return row_or_raise(await self._batch(text))

    def batch_wait_s(self, last_batch: int) -> float:
        return batch_wait_s(self.spec, last_batch)

    def startup_marks(self) -> dict:
        """When this replica's process started, entered ``__init__`` (Ray, Serve, FastAPI and this
        module imported), had torch imported, the model loaded and the probe answered (time.time())."""
        return self.started

    def api_key_sha256(self) -> str | None:
        """The digest of the API key this replica requires (None: open); asked by a redeploy."""
        return self.key_digest

    def _probs(self, items: list):
        """Texts, or decoded images (3, S, S), -> probability rows."""
        import numpy as np

        inputs = items if self.modality == "text" else np.stack(items)
        return self.clf.predict_proba(
            inputs, max_length=self.spec.max_length, precision=self.precision, batch_size=max(len(items), 1)
        )

    async def check_health(self) -> None:
        """Serve's periodic health check (every 10 s): a real forward pass, through the batch
        queue so the model is only ever called from one thread. /healthz reports its outcome."""
        try:
            row_or_raise(await self._batch(self.probe))
        except Exception:
            self.health_failed_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            raise
        self.health_failed_at = None

    def _ref(self) -> dict:
        return {"id": self.model_id, "labels": self.labels}

    # -------------------------------------------------------------- HTTP routes

    async def _inputs(self, req: PredictRequest) -> list:
        """The request's texts, or its images decoded (in a thread: decoding is CPU work)."""
        require_modality(self.modality, "text" if req.texts is not None else "image", self.clf.task)
        if req.texts is not None:
            check_text_limits(self.spec, req.texts)
            return req.texts
        data = request_bytes(req.images, self.spec)
        prep, limit = self.model.config.preprocessing, self.spec.max_image_pixels
        return list(await asyncio.to_thread(decode_request, data, prep, limit))

    @api.post("/v1/predict", response_model=PredictResponse)
    async def predict(self, req: PredictRequest) -> PredictResponse:
        rows = await asyncio.gather(*(self._score(x) for x in await self._inputs(req)))
        preds = [
            Prediction(
                label=self.labels[int(p.argmax())],
                score=float(p.max()),
                probs={lab: float(x) for lab, x in zip(self.labels, p, strict=True)},
            )
            for p in rows
        ]
        return PredictResponse(model=self._ref(), predictions=preds)

    @api.post("/v1/explain", response_model=ExplainResponse, response_model_exclude_none=True)
    async def explain(self, req: ExplainRequest) -> ExplainResponse:
        require_modality(self.modality, "text" if req.text is not None else "image", self.clf.task)
        if req.image is not None:
            (data,) = request_bytes([req.image], self.spec, field="image")
            args = (self.model, data, req.target, self.spec.max_image_pixels, self.spec.max_explain_pixels)
            args += (req.values,)
            return ExplainResponse(model=self._ref(), **await asyncio.to_thread(explain_response, *args))
        check_text_limits(self.spec, [req.text])
        return await asyncio.to_thread(self._explain, req.text)

    def _explain(self, text: str) -> ExplainResponse:
        """Gradient x input over the input embeddings, summed over the hidden size, per token."""
        from cluster.models.explain import METHOD, token_attributions

        a = token_attributions(self.model, self.tokenizer, text, max_length=self.spec.max_length)
        return ExplainResponse(
            model=self._ref(),
            label=self.labels[a["label"]],
            score=a["score"],
            method=METHOD,
            tokens=a["tokens"],
        )

    # Unset fields are left out: ``path`` is only set behind an API key.
    @api.get("/v1/model", response_model=ModelInfo, response_model_exclude_unset=True)
    async def model_info(self) -> ModelInfo:
        """The served model; its directory on the server only for callers holding the API key
        (an open endpoint never shows the server's file system)."""
        return ModelInfo(
            id=self.model_id,
            modality=self.modality,
            task=self.clf.task,
            labels=self.labels,
            **({"path": str(self.path)} if self.key_digest else {}),
            precision=self.precision,
            lineage=self.lineage,
            metrics=latest_metrics(self.home, self.model_id),
            limits=self._limits(),
        )

    def _limits(self) -> dict:
        if self.modality == "image":
            return {**image_limits(self.spec), "max_image_pixels": self.spec.max_image_pixels}
        return {"max_texts": self.spec.max_texts, "max_chars": self.spec.max_chars}

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        """200 with the model id while Serve's last health check passed, 503 after one failed.
        Runs no model: anyone may poll it, so it must cost nothing."""
        if self.health_failed_at is not None:
            raise HTTPException(
                503, detail=f"the last health check failed ({self.health_failed_at}); see the replica log"
            )
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
    """Serve application for ``args``: ServeSpec fields; ``model`` is resolved unless a path is given.
    A translation model is served by the translator (serve/translate.py), under the same name."""
    args = app_args(args)
    if args.get("task") == "translation":
        from serve.translate import Translator

        return Translator.options(**deployment_options(serve_spec(args))).bind(args)
    return Scorer.options(**deployment_options(serve_spec(args))).bind(args)


def app_args(args: dict) -> dict:
    """What each replica is constructed with: the ServeSpec fields (validated), the resolved
    model path and id, and the API key's digest (never the key)."""
    from cluster.errors import UserError
    from cluster.models.resolve import resolve_model
    from cluster.registry.record import Registry

    args = dict(args)
    spec = serve_spec(args)
    if "path" not in args:
        from cluster.models.modality import model_task

        ref = resolve_model(spec.model, Registry(args.get("home")))
        args["task"] = model_task(ref.path)
        if ref.labels is None and args["task"] != "translation":
            raise UserError(
                f"model {ref.model_id} has no id2label: serve a fine-tuned classifier, not a bare encoder"
            )
        args.update(path=ref.source.location, model_id=ref.model_id, checksum=ref.checksum)
    if args.get("api_key_sha256") is None:  # the key of whoever builds the app (serve deploy config.yaml)
        args["api_key_sha256"] = api_key_digest(spec.api_key_env)
    return args
