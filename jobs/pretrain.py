"""Stage 1: masked-language-model (MLM) continued pretraining on unlabelled in-domain text.

    python -m jobs.pretrain --data data/sample/train.parquet [--epochs 1] [--out DIR]
    evalctl pretrain --config jobs/configs/pretrain.yaml [--max-rows 3000]

Steps: read texts -> hold some out -> perplexity before -> MLM training (one
process, or data-parallel on several workers with Ray Train's TorchTrainer) ->
perplexity after -> save a model directory (a bare encoder + MLM head) that
`sweep` accepts as its model: load_classifier puts a new classification head on it.

Note: the bundled `base` ships without an MLM head (it is a sentence encoder), so
its head starts from the tied word embeddings and a fresh transform; the
"before" perplexity is of that model.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from cluster.errors import UserError
from cluster.registry.record import Registry, new_id
from cluster.specs.pretrain import PretrainSpec
from jobs.spec_cli import Workload, options, spec_command

log = logging.getLogger(__name__)


def load_mlm(path: str | Path, device: str = "cpu"):
    from cluster.models.modeldir import set_offline

    set_offline()
    import transformers
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    transformers.logging.set_verbosity_error()  # the MLM head of a sentence encoder is new: expected
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, trust_remote_code=False
    )
    return model.to(device), tokenizer


def batches(tokenizer, texts: list[str], spec: PretrainSpec, seed: int):
    """Masked batches (input_ids, attention_mask, labels); masking seeded, so reproducible."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=spec.mlm_probability)
    torch.manual_seed(seed)
    for i in range(0, len(texts), spec.batch_size):
        enc = tokenizer(texts[i : i + spec.batch_size], truncation=True, max_length=spec.max_length)
        yield collator([{k: enc[k][j] for k in enc} for j in range(len(enc["input_ids"]))])


def perplexity(model, tokenizer, texts: list[str], spec: PretrainSpec) -> float:
    """exp(mean cross-entropy over masked tokens), the same masks every time (seed fixed)."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    loss_sum, tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches(tokenizer, texts, spec, seed=12345):
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"] != -100).sum())
            loss_sum += float(model(**batch).loss) * n
            tokens += n
    return math.exp(loss_sum / max(tokens, 1))


def train_mlm(model, tokenizer, texts: list[str], spec: PretrainSpec, precision: str, on_step=None) -> None:
    """Plain MLM loop through the shared TrainStep; ``on_step(step)`` for callers' progress."""
    from cluster.train.step import TrainStep, make_optimizer

    device = next(model.parameters()).device
    steps = math.ceil(len(texts) / spec.batch_size) * spec.epochs
    optimizer, scheduler = make_optimizer(model, spec, steps)
    step_fn = TrainStep(model, optimizer, scheduler, precision)
    step = 0
    for epoch in range(spec.epochs):
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(texts))
        for batch in batches(tokenizer, [texts[i] for i in order], spec, seed=spec.seed + epoch):
            batch = {k: v.to(device) for k, v in batch.items()}
            step_fn(lambda: model(**batch).loss)  # noqa: B023  (called at once)
            step += 1
            if on_step:
                on_step(step)


# ------------------------------------------------------------------ orchestration


def run_pretrain(spec: PretrainSpec, registry: Registry | None = None) -> dict:
    """MLM-pretrain ``spec.model`` on ``spec.data``; save, register and return perplexities."""
    from cluster.data.scan import read_pandas, scan
    from cluster.models.resolve import resolve_model

    registry = registry or Registry()
    model_ref = resolve_model(spec.model, registry)
    summary = scan(spec.data, spec.max_rows)
    texts = read_pandas(spec.data, spec.max_rows)["text"].tolist()
    train, heldout = split_heldout(texts, spec)
    out = _out_dir(spec, registry)
    with registry.run(
        "pretrain",
        spec.model_dump(mode="json"),
        owner=spec.owner,
        dataset_path=spec.data.path,
        dataset_fingerprint=summary.fingerprint,
        model_id=model_ref.model_id,
    ) as run_id:
        t0 = time.perf_counter()
        spec = spec.model_copy(update={"workers": spec.workers or _gpu_workers()})
        log.info("MLM training on %d texts with %d worker(s)", len(train), spec.workers)
        if spec.workers > 1:
            model, tokenizer, before, after = _train_distributed(model_ref.path, train, heldout, spec)
        else:
            model, tokenizer, before, after = _train_here(model_ref.path, train, heldout, spec)
        result = {
            "perplexity_before": before,
            "perplexity_after": after,
            "train_texts": len(train),
            "heldout_texts": len(heldout),
            "wall_s": time.perf_counter() - t0,
        }
        lineage = {"base_model": model_ref.model_id, "pretrain_run": run_id, "stage": "mlm", **result}
        model_id = out.name if out else new_id("m")
        path, checksum = _save(model, tokenizer, out, lineage, model_id, registry)
        registry.register_model(
            path,
            checksum=checksum,
            run_id=run_id,
            base_model=model_ref.model_id,
            lineage=lineage,
            metrics=result,
            model_id=model_id,
        )
        registry.finish_run(run_id, metrics=result, artifact_path=path, model_id=model_id)
    return {**result, "model_id": model_id, "path": path, "run_id": run_id}


def _gpu_workers() -> int:
    """Default data parallelism: one worker per GPU when there are several, else 1.

    A cluster in reach (this process's Ray, RAY_ADDRESS, the local head) counts its
    GPUs; a machine on its own counts with torch, so a single-process run never
    starts Ray just to find out.
    """
    import ray

    from cluster.ray.runtime import head_running, init_ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS") or head_running():
        init_ray()
        return max(1, int(ray.cluster_resources().get("GPU", 0)))
    import torch

    return max(1, torch.cuda.device_count())


def _train_here(path, train, heldout, spec):
    import torch

    from cluster.models.device import pick_device, resolve_precision

    torch.manual_seed(spec.seed)
    device = pick_device()
    precision = resolve_precision(spec.precision, device)
    model, tokenizer = load_mlm(path, device)
    before = perplexity(model, tokenizer, heldout, spec)
    train_mlm(model, tokenizer, train, spec, precision)
    return model, tokenizer, before, perplexity(model, tokenizer, heldout, spec)


def _train_distributed(path, train, heldout, spec):
    """Data-parallel MLM with Ray Train (DDP; one GPU per worker when the cluster has them)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from cluster.ray.runtime import init_ray

    init_ray()
    use_gpu = bool(ray.cluster_resources().get("GPU"))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"path": str(path), "train": train, "heldout": heldout, "spec": spec},
        scaling_config=ScalingConfig(
            num_workers=spec.workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(name=new_id("pretrain"), storage_path=str(Registry().home / "pretrain")),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        model, tokenizer = load_mlm(Path(d) / "model")
    return model, tokenizer, result.metrics["perplexity_before"], result.metrics["perplexity_after"]


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: its shard of the texts; rank 0 measures and checkpoints."""
    import tempfile

    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_model

    from cluster.models.device import resolve_precision

    spec, ctx = config["spec"], ray.train.get_context()
    torch.manual_seed(spec.seed)
    device = get_device()
    model, tokenizer = load_mlm(config["path"], device)
    before = perplexity(model, tokenizer, config["heldout"], spec)
    ddp = prepare_model(model)  # DistributedDataParallel: gradients averaged across workers
    shard = config["train"][ctx.get_world_rank() :: ctx.get_world_size()]
    train_mlm(ddp, tokenizer, shard, spec, resolve_precision(spec.precision, device.type))
    after = perplexity(model, tokenizer, config["heldout"], spec)
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if ctx.get_world_rank() == 0:
            model.save_pretrained(Path(d) / "model", safe_serialization=True)
            tokenizer.save_pretrained(Path(d) / "model")
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"perplexity_before": before, "perplexity_after": after}, checkpoint=checkpoint)


def split_heldout(texts: list[str], spec: PretrainSpec) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(spec.seed).permutation(len(texts))
    n_held = max(1, int(round(len(texts) * spec.heldout_fraction)))
    if len(texts) - n_held < 1:
        raise UserError(f"{spec.data.path} has {len(texts)} texts: too few to hold {n_held} out and train")
    return [texts[i] for i in order[n_held:]], [texts[i] for i in order[:n_held]]


def _out_dir(spec: PretrainSpec, registry: Registry) -> Path | None:
    """--out DIR (must be new), or None: the model goes to the artifact store (checked writable now)."""
    from cluster.registry.artifacts import ArtifactStore

    if not spec.out:
        ArtifactStore.from_env(registry.home).check_writable()
        return None
    if "://" in spec.out:
        raise UserError(
            f"--out {spec.out}: --out takes a local directory; without it the model goes to "
            "the artifact store ($EVALCLUSTER_ARTIFACTS)"
        )
    out = Path(spec.out).expanduser().resolve()
    if out.exists():
        raise UserError(f"--out {out} already exists; choose a new directory")
    return out


def _save(model, tokenizer, out: Path | None, lineage: dict, model_id: str, registry: Registry):
    """Save the model to ``out`` or the artifact store; (location, checksum) to register."""
    from cluster.models.cache import store_model
    from cluster.models.text import save_model_dir
    from cluster.registry.artifacts import ArtifactStore, dir_checksum

    def save(dest: Path) -> Path:
        return save_model_dir(getattr(model, "module", model), tokenizer, dest, lineage)

    if out is not None:
        path = save(out)
        return str(path), dir_checksum(path)
    store = ArtifactStore.from_env(registry.home)
    return store_model(save, model_id, store, registry.home / "staging")


# ------------------------------------------------------------------ command line


def _run(spec: PretrainSpec, **_) -> None:
    from jobs.entry import console

    r = run_pretrain(spec)
    console.print(
        f"held-out perplexity {r['perplexity_before']:.2f} -> {r['perplexity_after']:.2f} "
        f"({r['train_texts']} training texts, {r['wall_s']:.0f}s)"
    )
    console.print(
        f"registered model {r['model_id']} at {r['path']}; fine-tune it with model: {r['model_id']}"
    )


WORKLOAD = Workload(
    spec=PretrainSpec,
    options=options(
        PretrainSpec, ["data.path", "data.text_column", "data.encoding", "*"], flags={"data.path": "--data"}
    ),
    run=_run,
    module="jobs.pretrain",
)
command = spec_command(WORKLOAD, "MLM continued pretraining; prints held-out perplexity before and after.")


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.pretrain")
