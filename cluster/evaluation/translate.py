"""Translation as an evaluation task: the steps the Ray Data evaluation pipeline asks of a task.

    preprocess   check each pair (empty or over-long texts: cluster/data/parallel.py ``bad_pairs``,
                 an error naming the row, or a ``_bad`` row with ``skip_bad_rows``), tokenise the
                 sources, order them by length within each sort group (``row // sort_rows``) and
                 cut model batches there, so a batch pads little, its sentences finish generating
                 at about the same step, and its composition does not depend on the blocks
    model        :class:`TranslateModel`, in a model actor: batched generation (greedy or ``num_beams``,
                 at most ``max_new_tokens`` tokens), then each sentence's BLEU, chrF and TER
                 statistics (sacrebleu's, cluster/stats/translation.py)
    statistics   the sentences' statistics summed, and per Poisson-bootstrap replicate (weights
                 hashed from (seed, row)); the worst sentences by chrF
    predictions  row, source, reference(s), hypothesis, sentence bleu/chrf/ter, the id column
    finalize     corpus bleu, chrf, ter (equal to sacrebleu's on the same hypotheses), their CIs,
                 the length ratio, BLEU's details, the worst sentences

Pipeline columns: ``source``, ``target``, ``ref_1``... (extra references) and ``id`` as the data
spec names them (read stage), then this module's ``_`` columns.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.data.parallel import drop_bad, reference_streams
from cluster.evaluation.task import BAD, BATCH, CONTENT, ROW, EvalTask
from cluster.models.cache import ModelSource
from cluster.models.text import sorted_batches
from cluster.specs.workloads import DataSpec, PipelineSpec
from cluster.stats import translation as corpus  # also registers its statistics with the part-file codec

SOURCE, TARGET, ID, HYPOTHESIS = "source", "target", "id", "hypothesis"
IDS = "_source_ids"  # the source's token ids, list<int32> (empty for a bad row)
STATS = "_stats:"  # + a metric: the sentence's sacrebleu statistics, list<float64> (model stage)
METRICS = ("bleu", "chrf", "ter")


@dataclass
class TranslateTask(EvalTask):
    """A translation model on a parallel corpus."""

    name: ClassVar[str] = "translation"

    model: ModelSource
    data: DataSpec  # columns (source, target, references, id) and max_chars
    spec: PipelineSpec  # batch_size, max_length, num_beams, max_new_tokens, precision, bootstrap, seed
    threads: int | None = None  # torch threads per model actor (None: the CPUs Ray gave it)
    run_token: str = ""  # tells a warm actor's runs apart (cluster/evaluation/warm.py)
    content_hash: bool = False  # add ``_content``: a ray.data.Dataset's fingerprint (sink.py)

    # ------------------------------------------------------------------ driver

    def input_columns(self) -> dict[str, str]:
        cols = {SOURCE: self.data.source_column, TARGET: self.data.target_column}
        cols.update({f"ref_{i}": c for i, c in enumerate(self.data.reference_columns, start=1)})
        if self.data.id_column:
            cols[ID] = self.data.id_column
        return cols

    def block_rows(self, rows_per_block: int) -> int:
        return rows_per_block

    # ------------------------------------------------------------------ CPU stage

    def preprocess(self, block: pa.Table) -> pa.Table:
        """Checked pairs (bad ones raise, or are marked ``_bad``), source ids, length order, batches."""
        for name in self.input_columns():
            if name != ID:
                block = block.set_column(
                    block.schema.get_field_index(name), name, block[name].cast(pa.string())
                )
        if self.content_hash:
            block = block.append_column(CONTENT, _content_hashes(block, self.input_columns()))
        _, bad = drop_bad(block, self.data, self.spec.skip_bad_rows)  # raises unless skip_bad_rows
        reasons = {b.row: b.reason for b in bad}
        rows = block[ROW].to_pylist()
        sources = [("" if r in reasons else s) for r, s in zip(rows, block[SOURCE].to_pylist(), strict=True)]
        ids = source_tokenizer(self.model)(sources, truncation=True, max_length=self.spec.max_length)[
            "input_ids"
        ]
        ids = [[] if r in reasons else x for r, x in zip(rows, ids, strict=True)]
        # As cluster/models/text.py batches classification: by length within each sort group
        # (row // sort_rows), never across two, so a sentence's batch, and so its translation, is
        # the same whatever the blocks, workers or nodes.
        lengths = np.array([len(x) for x in ids], np.int64)
        batches = sorted_batches(lengths, np.asarray(rows) // self.spec.sort_rows, self.spec.batch_size)
        order = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        batch_of = np.concatenate([np.full(len(b), rows[b[0]]) for b in batches]) if batches else order
        block = block.take(pa.array(order, pa.int64()))
        block = block.append_column(IDS, pa.array([ids[i] for i in order], pa.list_(pa.int32())))
        block = block.append_column(BAD, pa.array([reasons.get(rows[i]) for i in order], pa.string()))
        return block.append_column(BATCH, pa.array(batch_of, pa.int64()))

    # ------------------------------------------------------------------ model stage

    def load(self, device: str) -> TranslateModel:
        return TranslateModel(self, device)

    # ------------------------------------------------------------------ write stage

    def statistics(self, rows: pa.Table) -> dict[str, Any]:
        sentence = {m: _matrix(rows[STATS + m], m) for m in METRICS}
        stats = corpus.stats_from_sentences(
            sentence, rows[ROW].to_numpy(), self.spec.bootstrap, self.spec.seed
        )
        stats.refs = corpus.count_refs(reference_streams(rows))
        stats.empty_hypotheses = int(
            pc.sum(pc.equal(pc.utf8_trim_whitespace(rows[HYPOTHESIS]), "")).as_py() or 0
        )
        return {"translation": stats, "worst": corpus.worst_of(self._sentences(rows, sentence))}

    def _sentences(self, rows: pa.Table, sentence: dict[str, np.ndarray]) -> list[dict]:
        scores = corpus.sentence_scores(sentence)
        cols = {k: rows[k].to_pylist() for k in (ROW, SOURCE, TARGET, HYPOTHESIS)}
        ids = rows[ID].to_pylist() if ID in rows.column_names else None
        out = []
        for i in range(rows.num_rows):
            r = {"row": cols[ROW][i], "source": cols[SOURCE][i], "reference": cols[TARGET][i]}
            r.update(hypothesis=cols[HYPOTHESIS][i], **{m: float(scores[m][i]) for m in METRICS})
            if ids is not None:
                r["id"] = ids[i]
            out.append(r)
        return out

    def predictions(self, rows: pa.Table) -> pa.Table:
        scores = corpus.sentence_scores({m: _matrix(rows[STATS + m], m) for m in METRICS})
        cols: dict[str, Any] = {ROW: rows[ROW], SOURCE: rows[SOURCE], "reference": rows[TARGET]}
        extra = sorted(c for c in rows.column_names if c.startswith("ref_"))
        for i, name in enumerate(extra, start=2):
            cols[f"reference_{i}"] = rows[name]
        cols[HYPOTHESIS] = rows[HYPOTHESIS]
        cols.update({m: pa.array(scores[m], pa.float64()) for m in METRICS})
        if ID in rows.column_names:
            cols[self.data.id_column or ID] = rows[ID]
        return pa.table(cols)

    # ------------------------------------------------------------------ driver, at the end

    def finalize(self, merged: dict[str, Any]) -> dict:
        metrics = corpus.finalize(merged.get("translation") or corpus.empty_stats(self.spec.bootstrap))
        metrics["worst"] = (merged.get("worst") or corpus.Worst(corpus.WORST, [])).rows
        metrics["generation"] = {"num_beams": self.spec.num_beams, "max_new_tokens": self.spec.max_new_tokens}
        return metrics


# ------------------------------------------------------------------ the model stage


class TranslateModel:
    """A translator loaded onto ``device`` for one TranslateTask."""

    def __init__(self, task, device: str):
        import torch

        from cluster.models.device import resolve_precision
        from cluster.models.seq2seq import load_translator
        from cluster.ray.runtime import worker_threads

        torch.set_num_threads(task.threads or worker_threads())
        self.task, self.device = task, device
        self.precision = resolve_precision(task.spec.precision, device)
        self.translator = load_translator(task.model.local_path(), device=device)

    def use(self, task) -> None:
        """A warm actor serves a later run of the same model: that run's settings from now on
        (its generation settings, its torch threads)."""
        import torch

        self.task = task
        if task.threads and torch.get_num_threads() != task.threads:
            torch.set_num_threads(task.threads)

    def predict(self, batch: pa.Table) -> pa.Table:
        """Rows of one model batch -> the same rows with ``hypothesis`` and the ``_stats:`` columns;
        the source ids are dropped."""
        spec = self.task.spec
        good = np.flatnonzero(np.asarray(batch[BAD].is_null().to_numpy(zero_copy_only=False)))
        ids = batch[IDS].to_pylist()
        hyps: list[str | None] = [None] * batch.num_rows
        if len(good):
            out = self.translator.generate(
                [ids[i] for i in good], spec.num_beams, spec.max_new_tokens, self.precision
            )
            for i, text in zip(good, out, strict=True):
                hyps[i] = text
        kept = batch.take(pa.array(good, pa.int64()))
        stats = corpus.sentence_stats([hyps[i] for i in good], reference_streams(kept))
        batch = batch.drop_columns([IDS]).append_column(HYPOTHESIS, pa.array(hyps, pa.string()))
        for m in METRICS:
            rows: list = [None] * batch.num_rows
            for j, i in enumerate(good):
                rows[i] = stats[m][j].tolist()
            batch = batch.append_column(STATS + m, pa.array(rows, pa.list_(pa.float64())))
        return batch


@functools.cache
def source_tokenizer(model: ModelSource):
    """The model's source tokenizer, loaded once per worker process."""
    from transformers import AutoTokenizer

    from cluster.models.modeldir import set_offline

    set_offline()
    return AutoTokenizer.from_pretrained(model.local_path(), local_files_only=True)


def _content_hashes(block: pa.Table, names) -> pa.Array:
    """(n,) uint64: a hash of each row's position and texts (source, target, references, id)."""
    columns = [block[ROW].to_pylist()] + [block[n].to_pylist() for n in names]
    out = np.empty(block.num_rows, np.uint64)
    for i, values in enumerate(zip(*columns, strict=True)):
        text = "\x1f".join("" if v is None else str(v) for v in values)
        out[i] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return pa.array(out)


def _matrix(col, metric: str) -> np.ndarray:
    """A ``_stats:`` column (list<float64>, one list per sentence) as an (n, k) array."""
    values = col.to_pylist()
    return np.asarray(values, dtype=np.float64).reshape(len(values), corpus.stat_width(metric))
