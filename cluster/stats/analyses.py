"""Analyses beside an evaluation's core statistics, and the metrics.json sections they become.

The evaluation pipeline's write stage (cluster/evaluation/classify.py ``statistics``) calls
:meth:`Analyses.batch` on the rows of each part file; every part it returns is a mergeable
statistic (``a + b``: exact and order-free, bounded in size), which the driver adds up per name
and :func:`finalize` turns into sections of metrics.json:

    threshold          cluster/stats/threshold.py    ROC-AUC, AP, top-2 accuracy, Brier, curves, CIs
    slices             cluster/stats/slices.py       weak slices (--auto-slices)
    mistakes           cluster/stats/mistakes.py     the most confident mistakes per confused pair
    robustness:KIND    cluster/stats/robustness.py   clean vs perturbed predictions of the same rows
    profile, embeddings, confidence, predicted  the drift checks' inputs (:class:`DriftAnalyses`)

What needs the model is computed per row in the model stage and reaches ``batch`` as columns:
the perturbed texts' probabilities (:func:`perturbed_probs`, with the model as ``runner``:
``runner.probs(texts)`` and ``runner.token_ids(texts)``), the mistakes' token attributions,
the drift checks' embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Imported here, not where used: the driver reads these statistics back from part files, and the
# codec knows a type once its module has registered it (cluster/stats/codec.py).
from cluster.data.perturb import perturb
from cluster.stats.drift import profile_from_counts
from cluster.stats.metrics import metric_names
from cluster.stats.mistakes import confident_mistakes, mistakes_summary
from cluster.stats.robustness import robustness_stats, robustness_summary
from cluster.stats.samples import hash_sample, sampled, value_counts
from cluster.stats.slices import slice_stats, weak_slices
from cluster.stats.threshold import threshold_metrics, threshold_stats


@dataclass(frozen=True)
class Analyses:
    """What an evaluation (or robustness) run computes per batch besides cluster.stats.metrics.Stats."""

    num_classes: int
    threshold: bool = True
    auto_slices: bool = False
    slice_column: str | None = None
    mistakes: int = 0
    perturb: tuple[str, ...] = ()
    rate: float = 0.1
    seed: int = 0
    bootstrap: int = 0

    @classmethod
    def for_spec(cls, spec, num_classes: int) -> Analyses:
        """The analyses an EvaluateSpec (or RobustnessSpec) asks for."""
        return cls(
            num_classes=num_classes,
            threshold=spec.threshold,
            auto_slices=spec.auto_slices,
            slice_column=spec.data.slice_column,
            mistakes=spec.mistakes,
            perturb=tuple(getattr(spec, "perturb", ())),
            rate=getattr(spec, "rate", 0.0),
            seed=spec.seed,
            bootstrap=spec.bootstrap,
        )

    def batch(self, *, texts, y_true, probs, rows, slice_values=None, perturbed=None, tokens=None) -> dict:
        """The mergeable parts of some rows: texts (n,) or None (images), y_true (n,) ids, probs (n, k),
        rows (n,); ``perturbed``: kind -> the perturbed texts' probs (n, k); ``tokens``: (n,) JSON
        token attributions or None per row (the mistakes' candidates)."""

        parts = {}
        if self.threshold:
            parts["threshold"] = threshold_stats(y_true=y_true, probs=probs, rows=rows)
        if self.auto_slices:
            parts["slices"] = slice_stats(
                texts=texts,
                y_true=y_true,
                pred=probs.argmax(1),
                num_classes=self.num_classes,
                slice_column=self.slice_column,
                slice_values=None if slice_values is None else list(slice_values),
            )
        if self.mistakes:
            parts["mistakes"] = confident_mistakes(
                texts=texts, y_true=y_true, probs=probs, rows=rows, top=self.mistakes, tokens=tokens
            )
        for kind in self.perturb:
            parts[f"robustness:{kind}"] = self._robustness(kind, texts, y_true, probs, rows, perturbed[kind])
        return parts

    def _robustness(self, kind: str, texts, y_true, probs, rows, probs_perturbed):

        new = perturb(texts, kind=kind, rate=self.rate, seed=self.seed, rows=rows)  # as the model saw them
        return robustness_stats(
            y_true=y_true,
            probs_clean=probs,
            probs_perturbed=probs_perturbed,
            rows=rows,
            texts=texts,
            perturbed_texts=new,
            replicates=self.bootstrap,
            seed=self.seed,
        )


def perturbed_probs(
    runner, texts: list[str], perturbed: list[str], probs: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Probabilities of the perturbed texts. A row whose token ids did not change (an identity, or
    case changes under an uncased tokenizer) is the same model input, so it keeps its clean
    probabilities exactly; only the others run through the model (also saving their cost), batched
    by their input positions ``rows`` as the clean ones are."""
    out = np.array(probs, dtype=np.float64, copy=True)
    changed = [i for i, (a, b) in enumerate(zip(texts, perturbed, strict=True)) if a != b]
    if changed:
        before = runner.token_ids([texts[i] for i in changed])
        after = runner.token_ids([perturbed[i] for i in changed])
        changed = [i for i, a, b in zip(changed, before, after, strict=True) if a != b]
    if changed:
        out[changed] = runner.probs([perturbed[i] for i in changed], np.asarray(rows)[changed])
    return out


def finalize(parts: dict, spec, labels: list[str], metrics: dict) -> None:
    """Add the sections of the merged ``parts`` to ``metrics`` (a metrics.json dict, in place)."""

    if "threshold" in parts:
        tm = threshold_metrics(parts["threshold"], labels=labels, bootstrap=spec.bootstrap, seed=spec.seed)
        metrics.update({k: tm[k] for k in metric_names(family="threshold")})
        metrics["ci95"].update({k: v for k, v in tm["ci95"].items() if v is not None})
        metrics["threshold"] = {k: tm[k] for k in ("top_k", "exact", "cells", "per_class", "curves")}
    if "slices" in parts:
        metrics["auto_slices"] = weak_slices(
            parts["slices"],
            labels=labels,
            metric=spec.slice_metric,
            min_slice_size=spec.min_slice_size,
            seed=spec.seed,
        )
    if "mistakes" in parts:
        metrics["mistakes"] = mistakes_summary(
            parts["mistakes"], labels=labels, confusion=metrics["confusion_matrix"]
        )
    kinds = [k.split(":", 1)[1] for k in parts if k.startswith("robustness:")]
    if kinds:
        metrics["robustness"] = {
            "rate": spec.rate,
            "seed": spec.seed,
            "perturbations": {
                kind: robustness_summary(parts[f"robustness:{kind}"], labels=labels) for kind in kinds
            },
        }


@dataclass(frozen=True)
class DriftAnalyses:
    """What a drift check computes per batch of one side (jobs/drift.py)."""

    embed_fraction: float  # share of rows embedded (hash-sampled candidates)
    embed_rows: int  # rows kept in the sample
    seed: int = 0

    def embedded(self, rows) -> np.ndarray:
        """(n,) bool: the rows the model stage embeds (hash-sampled candidates)."""

        return sampled(np.asarray(rows), self.embed_fraction, self.seed)

    def batch(self, *, rows, probs, lengths, unknown, vectors) -> dict:
        """rows (n,); probs (n, k) or None (a bare encoder); lengths, unknown (n,) tokens and [UNK]
        tokens per text; vectors: (n,) embeddings (None where a row was not embedded)."""

        rows = np.asarray(rows)
        pick = np.array([v is not None for v in vectors], bool)
        dim = next((len(v) for v in vectors if v is not None), 1)
        vecs = np.array([v for v in vectors if v is not None], np.float32).reshape(-1, dim)
        parts = {
            "profile": profile_from_counts(np.asarray(lengths), np.asarray(unknown)),
            "embeddings": hash_sample(rows=rows[pick], vectors=vecs, size=self.embed_rows, seed=self.seed),
        }
        if probs is not None:
            parts["confidence"] = value_counts(probs.max(1))
            parts["predicted"] = np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.int64)
        return parts
