"""The online translator: the Ray Serve deployment serve/app.py's ``build_app`` gives a translation model.

    POST /v1/translate {"texts": [...]}  -> {"model": {...}, "translations": [...]}
    GET  /v1/model                       -> id, task, generation settings, lineage, metrics, limits
    GET  /healthz                        -> 200 while the last health check passed
    POST /v1/predict                     -> 409: this model translates (POST /v1/translate)

It is deployed under the scorer's name (``Scorer``, application ``evalcluster``), so `evalctl
serve deploy/status/stop` and a hot swap between a classifier and a translator work alike, and
it answers with the scorer's API key guard and JSON errors (serve/http.py).

Each text of a request goes through ``@serve.batch``: texts of concurrent requests are
translated together, by the same length-sorted batched generation as offline evaluation
(``Translator.translate``: greedy or ``num_beams``, at most ``max_new_tokens`` tokens), so a
model gives the same translation online and offline. Texts are checked before they are batched
(serve/schemas.py ``Text``; count and length limits: 413), and a batch that fails anyway is run
text by text (serve/batching.py), so one request's failure never fails another's.
"""

import asyncio
import time

from fastapi import FastAPI, HTTPException
from ray import serve

from cluster.apikey import api_key_digest
from serve.batching import row_or_raise, score_each
from serve.http import check_text_limits, install, latest_metrics, serve_spec
from serve.schemas import Health
from serve.translate_schemas import TranslateRequest, TranslateResponse, TranslatorInfo, TranslatorRef

api = install(
    FastAPI(
        title="evalcluster translator", version="1", description="Online translation by a fine-tuned model."
    )
)
PROBE = "health check"  # the text each health check translates


def batch_wait_s(batch_wait_ms: float, last_batch: int) -> float:
    """Wait ``batch_wait_ms`` for a batch to fill only while the last one held several texts (as
    the scorer: a lone request never waits)."""
    return batch_wait_ms / 1000 if last_batch > 1 else 0.0


@serve.deployment(name="Scorer", max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(api)
class Translator:
    """One replica: one translation model, dynamic batching."""

    def __init__(self, args: dict):
        from cluster.clock import process_started_at

        self.started = {"process": process_started_at(), "init": time.time()}
        import torch

        self.started["torch"] = time.time()
        from cluster.models.cache import ModelSource
        from cluster.models.device import pick_device, resolve_precision
        from cluster.models.modeldir import read_lineage
        from cluster.models.seq2seq import load_translator
        from cluster.ray.runtime import worker_threads

        self.spec = serve_spec(args)
        torch.set_num_threads(worker_threads())
        self.device = pick_device(self.spec.gpus_per_replica)
        local = ModelSource(args["path"], args["model_id"], args.get("checksum")).local_path()
        self.tr = load_translator(local, device=self.device)
        self.precision = resolve_precision(self.spec.precision, self.device)
        self.model_id, self.path, self.home = args["model_id"], args["path"], args.get("home")
        self.lineage = read_lineage(local)
        sent = args.get("api_key_sha256")
        self.key_digest = (sent if sent is not None else api_key_digest(self.spec.api_key_env)) or None
        self._batch.set_max_batch_size(self.spec.max_batch_size)
        self._batch.set_batch_wait_timeout_s(0.0)
        self.started["model"] = time.time()
        self._translate([PROBE])  # a replica whose model cannot run never starts
        self.health_failed_at: str | None = None
        self.started["ready"] = time.time()

    # -------------------------------------------------------------- model calls

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batch(self, texts: list[str]) -> list:
        """Single texts from concurrent requests -> their translations (an exception in the place
        of a text that failed)."""
        out = await asyncio.to_thread(score_each, self._translate, texts)  # the loop keeps accepting
        self._batch.set_batch_wait_timeout_s(batch_wait_s(self.spec.batch_wait_ms, len(texts)))
        return out

    def _translate(self, texts: list[str]) -> list[str]:
        return self.tr.translate(
            texts,
            num_beams=self.spec.num_beams,
            max_new_tokens=self.spec.max_new_tokens,
            batch_size=max(len(texts), 1),
            max_length=self.spec.max_length,
            precision=self.precision,
        )

    async def check_health(self) -> None:
        """Serve's periodic health check: a real translation through the batch queue."""
        try:
            row_or_raise(await self._batch(PROBE))
        except Exception:
            self.health_failed_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
            raise
        self.health_failed_at = None

    def startup_marks(self) -> dict:
        return self.started

    def api_key_sha256(self) -> str | None:
        return self.key_digest

    def _limits(self) -> dict:
        return {"max_texts": self.spec.max_texts, "max_chars": self.spec.max_chars}

    # -------------------------------------------------------------- HTTP routes

    @api.post("/v1/translate", response_model=TranslateResponse)
    async def translate(self, req: TranslateRequest) -> TranslateResponse:
        check_text_limits(self.spec, req.texts)
        rows = await asyncio.gather(*(self._batch(t) for t in req.texts))
        return TranslateResponse(
            model=TranslatorRef(id=self.model_id), translations=[row_or_raise(r) for r in rows]
        )

    @api.post("/v1/predict")
    async def predict(self) -> None:
        raise HTTPException(
            409, detail=f'model {self.model_id} translates: POST /v1/translate {{"texts": [...]}}'
        )

    @api.get("/v1/model", response_model=TranslatorInfo, response_model_exclude_unset=True)
    async def model_info(self) -> TranslatorInfo:
        return TranslatorInfo(
            id=self.model_id,
            task="translation",
            **({"path": str(self.path)} if self.key_digest else {}),
            precision=self.precision,
            generation={"num_beams": self.spec.num_beams, "max_new_tokens": self.spec.max_new_tokens},
            lineage=self.lineage,
            metrics=latest_metrics(self.home, self.model_id),
            limits=self._limits(),
        )

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        if self.health_failed_at is not None:
            raise HTTPException(
                503, detail=f"the last health check failed ({self.health_failed_at}); see the replica log"
            )
        return Health(status="ok", model=self.model_id)
