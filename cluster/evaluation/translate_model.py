"""The model stage of a translation evaluation: one loaded translator in a Ray Data actor.

``predict`` gets the rows of one model batch (``_batch``: cut by the CPU stage from a block
ordered by source length), generates their translations in one ``generate`` call (greedy or
beam search, at most ``max_new_tokens`` tokens; cluster/models/seq2seq.py), and extracts each
sentence's BLEU, chrF and TER statistics with sacrebleu (cluster/stats/translation.py), so the
write stage only adds them up. Bad rows pass through with a null hypothesis and no statistics.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster.evaluation.translate import BAD, HYPOTHESIS, IDS, METRICS, STATS


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

    def predict(self, batch: pa.Table) -> pa.Table:
        """Rows of one model batch -> the same rows with ``hypothesis`` and the ``_stats:`` columns;
        the source ids are dropped."""
        from cluster.data.parallel import reference_streams
        from cluster.stats.translation import sentence_stats

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
        stats = sentence_stats([hyps[i] for i in good], reference_streams(kept))
        batch = batch.drop_columns([IDS]).append_column(HYPOTHESIS, pa.array(hyps, pa.string()))
        for m in METRICS:
            rows: list = [None] * batch.num_rows
            for j, i in enumerate(good):
                rows[i] = stats[m][j].tolist()
            batch = batch.append_column(STATS + m, pa.array(rows, pa.list_(pa.float64())))
        return batch
