"""Translation models: any Hugging Face sequence-to-sequence model directory, loaded, trained and run.

A directory loads through ``AutoModelForSeq2SeqLM`` (Marian, T5, BART, ``EncoderDecoderModel``,
...) with safetensors weights only (pickled weights are refused before anything is read),
``trust_remote_code`` off, offline. Its tokenizer is the directory's; a directory with a
``target_tokenizer/`` subdirectory (this project's models: cluster/models/seq2seq_build.py)
encodes targets and decodes outputs with that one. Its config.json says ``"task":
"translation"`` (cluster/models/modality.py ``model_task``); a foreign seq2seq directory
without it is recognised by its architecture.

:class:`Translator` is what training (cluster/train/seq2seq_loop.py), evaluation and serving
call: ``loss`` (teacher-forced cross-entropy), ``translate`` (batched greedy or beam
generation over length-sorted batches), ``save`` and ``save_checkpoint``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import UserError
from cluster.models.seq2seq_build import TARGET_TOKENIZER_DIR

LABEL_IGNORE = -100  # target positions left out of the loss (padding)


def is_seq2seq_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a translation model: ``"task": "translation"``, or a Hugging Face
    encoder-decoder architecture (``is_encoder_decoder`` in its config)."""
    f = Path(path) / "config.json"
    if not f.is_file():
        return False
    cfg = json.loads(f.read_text())
    return cfg.get("task") == "translation" or bool(cfg.get("is_encoder_decoder"))


@dataclass
class Translator:
    """A seq2seq model with its source and target tokenizers (the same object for most models)."""

    model: Any  # transformers PreTrainedModel with .generate
    tokenizer: Any  # encodes sources
    target_tokenizer: Any  # encodes targets (labels), decodes outputs

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -------------------------------------------------------------- training

    def encode(self, sources: list[str], targets: list[str], *, max_length: int, max_target_length: int):
        """A teacher-forced batch: source ids and mask, decoder inputs (targets shifted right,
        the decoder start first) and labels (-100 on padding), on the model's device."""
        import torch

        enc = self.tokenizer(
            sources, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        tgt = self.target_tokenizer(
            text_target=targets,
            truncation=True,
            max_length=max_target_length,
            padding=True,
            return_tensors="pt",
        )
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, LABEL_IGNORE)
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
        return {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def loss(self, batch: dict):
        """Mean token cross-entropy of the labels given the shifted targets (teacher forcing)."""
        import torch

        labels = batch["labels"]
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
        )
        logits = out.logits.float()
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=LABEL_IGNORE
        )

    # -------------------------------------------------------------- generation

    def translate(
        self,
        texts: list[str],
        *,
        num_beams: int = 1,
        max_new_tokens: int = 128,
        batch_size: int = 32,
        max_length: int = 128,
        precision: str = "fp32",
    ) -> list[str]:
        """Translations in input order: greedy (``num_beams`` 1) or beam search, at most
        ``max_new_tokens`` tokens each. Sources are tokenised once and sorted by length, so a
        batch pads to its own longest source and its sentences finish at about the same step."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out: list[str] = [""] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            got = self.generate([ids[i] for i in idx], num_beams, max_new_tokens, precision)
            for i, text in zip(idx, got, strict=True):
                out[i] = text
        return out

    def generate(
        self, input_ids: list[list[int]], num_beams: int, max_new_tokens: int, precision: str = "fp32"
    ) -> list[str]:
        """One batch: source token ids (unpadded, one list per sentence) -> translations, in order
        (the evaluation's model stage calls this with the ids its CPU stage tokenised)."""
        import torch

        from cluster.models.device import autocast

        feats = [{"input_ids": list(x), "attention_mask": [1] * len(x)} for x in input_ids]
        self.model.eval()
        with torch.inference_mode(), autocast(precision, self.device.type):
            batch = self.tokenizer.pad(feats, return_tensors="pt").to(self.device)
            ids = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                num_beams=num_beams,
                do_sample=False,
                max_new_tokens=max_new_tokens,
            )
        return [t.strip() for t in self.target_tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # -------------------------------------------------------------- saving

    def save_files(self, out: Path) -> None:
        """The model directory's files into ``out`` (safetensors; the target tokenizer apart when
        it is not the source one)."""
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        if self.target_tokenizer is not self.tokenizer:
            self.target_tokenizer.save_pretrained(out / TARGET_TOKENIZER_DIR)
        _mark_task(out)

    def save(self, out: str | Path, lineage: dict) -> Path:
        """A model directory, written beside ``out`` and renamed (complete or absent)."""
        from cluster.models.modeldir import set_offline, write_model_dir

        set_offline()
        return write_model_dir(out, self.save_files, lineage)

    def save_checkpoint(self, d: Path) -> None:
        """The model part of a trial checkpoint: ``d/model``, a model directory without lineage."""
        self.save_files(d / "model")


def _mark_task(out: Path) -> None:
    """``"task": "translation"`` in config.json (a foreign model's config does not carry it)."""
    f = out / "config.json"
    cfg = json.loads(f.read_text())
    if cfg.get("task") != "translation":
        cfg["task"] = "translation"
        f.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_translator(path: str | Path, device: str = "cpu") -> Translator:
    """A translation model directory (see the module docstring), in eval mode on ``device``."""
    import transformers
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from cluster.models.modeldir import require_safetensors, set_offline

    set_offline()
    transformers.logging.set_verbosity_error()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a model directory (no config.json)")
    require_safetensors(path)
    if not is_seq2seq_dir(path):
        raise UserError(
            f"model {path} is not a translation model (no encoder-decoder in its config.json); "
            "fine-tune one with `evalctl sweep --task translation` or give a Marian/T5/BART directory"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        target = path / TARGET_TOKENIZER_DIR
        target_tokenizer = (
            AutoTokenizer.from_pretrained(target, local_files_only=True) if target.is_dir() else tokenizer
        )
        model = AutoModelForSeq2SeqLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load translation model from {path}: {str(exc).splitlines()[0]}") from exc
    return Translator(model.to(device).eval(), tokenizer, target_tokenizer)


def start_translator(
    model_path: str | Path,
    spec,
    *,
    target_tokenizer=None,
    init: str = "pretrained",
    seed: int = 0,
    device="cpu",
) -> Translator:
    """The model a translation trial starts from (``spec``: cluster.specs.translation.Seq2SeqSpec).

    A translation directory: its weights (``init: random``: its architecture, weights drawn
    afresh, seeded). A bare encoder (``base``): a new ``EncoderDecoderModel`` around it with a
    new decoder over ``target_tokenizer`` (cluster/models/seq2seq_build.py)."""
    if is_seq2seq_dir(model_path):
        tr = load_translator(model_path, device)
        if init == "random":
            tr.model = _fresh(tr.model, seed).to(device)
        return tr
    from cluster.models.seq2seq_build import new_encoder_decoder

    if target_tokenizer is None:
        raise UserError(f"{model_path} is an encoder: a new translator needs a target tokenizer")
    model, source = new_encoder_decoder(model_path, target_tokenizer, spec, init=init, seed=seed)
    return Translator(model.to(device), source, target_tokenizer)


def _fresh(model, seed: int):
    """The same architecture and config, every weight drawn afresh (seeded)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForSeq2SeqLM.from_config(model.config)
    fresh.generation_config = model.generation_config
    return fresh.eval()
