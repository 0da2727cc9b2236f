"""The most confident mistakes of an evaluation, per confused class pair: a bounded, mergeable top-k.

For each (true class, predicted class) pair with true != predicted, keep the ``top``
rows the model got wrong with the highest probability on its (wrong) prediction.
Ties are broken by the lower row id, so ``a + b`` is a total order: any sharding and
any merge order keep the same rows. Size: at most k (k - 1) ``top`` rows, whatever
the data.

Example::

    >>> import numpy as np
    >>> m = confident_mistakes(texts=["a", "b", "c"], y_true=np.array([0, 0, 1]),
    ...                        probs=np.array([[.2, .8], [.4, .6], [.1, .9]]), rows=np.arange(3), top=1)
    >>> [(e["row"], e["text"], e["score"]) for p in mistakes_summary(m, labels=["neg", "pos"])
    ...  for e in p["examples"]]
    [(0, 'a', 0.8)]
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field

import numpy as np

from cluster.stats import codec


@dataclass
class ConfidentMistakes:
    """Per (true, predicted) pair, up to ``top`` entries (score, -row, p_true, text, tokens), best first;
    ``tokens``: the row's token attributions as JSON (cluster/models/explain.py), or None."""

    top: int
    pairs: dict[tuple[int, int], list[tuple]] = field(default_factory=dict)

    def __add__(self, other: ConfidentMistakes) -> ConfidentMistakes:
        pairs = dict(self.pairs)
        for key, items in other.pairs.items():
            pairs[key] = heapq.nlargest(self.top, pairs.get(key, []) + items)
        return ConfidentMistakes(self.top, pairs)


def confident_mistakes(
    *,
    texts: list[str] | None,
    y_true: np.ndarray,
    probs: np.ndarray,
    rows: np.ndarray,
    top: int = 3,
    tokens: list[str | None] | None = None,
) -> ConfidentMistakes:
    """One batch's most confident mistakes: texts (n,), y_true (n,) class ids, probs (n, k), rows (n,).
    ``texts`` None (images): the examples keep their row, scores and labels, text None. ``tokens``:
    each row's token attributions (JSON) where the model stage computed them."""
    y, p, rows = np.asarray(y_true), np.asarray(probs), np.asarray(rows)
    pred = p.argmax(1)
    score = p[np.arange(len(y)), pred]
    out = ConfidentMistakes(top)
    for i in np.flatnonzero(pred != y):
        key = (int(y[i]), int(pred[i]))
        text, toks = (None if texts is None else texts[i]), (None if tokens is None else tokens[i])
        item = (float(score[i]), -int(rows[i]), float(p[i, y[i]]), text, toks)
        out.pairs[key] = heapq.nlargest(top, out.pairs.get(key, []) + [item])
    return out


def mistakes_summary(m: ConfidentMistakes, *, labels: list[str], confusion: list | None = None) -> list[dict]:
    """Pairs (most frequent confusion first when ``confusion`` is given, else by best score) with
    their examples: row, text, true label, prediction, score and the true class's probability."""
    pairs = []
    for (t, p), items in m.pairs.items():
        count = int(confusion[t][p]) if confusion is not None else len(items)
        examples = [_example(item, labels[t], labels[p]) for item in sorted(items, reverse=True)]
        pairs.append({"label": labels[t], "pred": labels[p], "count": count, "examples": examples})
    pairs.sort(key=lambda x: (-x["count"], -x["examples"][0]["score"], x["label"], x["pred"]))
    return pairs


def _example(item: tuple, label: str, pred: str) -> dict:
    score, neg_row, p_true, text, tokens = item
    out = {"row": -neg_row, "text": text, "label": label, "pred": pred, "score": score, "p_true": p_true}
    if tokens is not None:
        out["tokens"] = json.loads(tokens)
    return out


codec.register(ConfidentMistakes)  # part files hold them (cluster/stats/codec.py)
