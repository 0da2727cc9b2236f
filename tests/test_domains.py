"""The corpus's source domains: the segmentation rule, its evidence, and the per-domain splits."""

import doctest

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import cluster.data.domains
from cluster.data.corpus import LABELS, corpus_path, load_corpus
from cluster.data.domains import DOMAINS, keyword_domain, raw_domains, sample_domain_splits, segment


@pytest.fixture(scope="module")
def raw():
    df = pd.read_csv(corpus_path(), encoding="latin-1")
    return df.assign(domain=raw_domains(df), vote=[keyword_domain(str(t)) for t in df["text"]])


@pytest.mark.heavy  # reads and splits the real corpus
def test_keywords_agree_with_the_segments(raw):
    voted = raw[raw["vote"].notna()]
    agree = (voted["vote"] == voted["domain"]).mean()
    assert len(voted) > 37000 and agree > 0.999, agree


@pytest.mark.heavy  # reads and splits the real corpus
def test_independent_evidence_confirms_the_segments(raw):
    # Only the coachella and claritin sources published no annotator confidence.
    no_conf = raw["confidence"].isna()
    assert (no_conf == raw["domain"].isin(["coachella", "claritin"])).all()
    # The airline segment is exactly the size of CrowdFlower's Twitter US Airline Sentiment set.
    assert (raw["domain"] == "airline").sum() == 14640
    # Each sentiment block runs through the domains in order: 6 segments, 5 cuts, per block.
    changes = (raw["domain"].to_numpy()[1:] != raw["domain"].to_numpy()[:-1]).sum()
    assert changes == 3 * 6 - 1


def test_segment_recovers_planted_cuts_despite_noise_and_empty_segments():
    rng = np.random.default_rng(0)
    sizes = [40, 0, 25, 60, 1, 30]  # an empty segment and a one-row segment
    truth = np.repeat(np.arange(6), sizes)
    votes = []
    for d in truth:
        u = rng.random()
        votes.append(None if u < 0.3 else DOMAINS[rng.integers(6)] if u < 0.35 else DOMAINS[d])
    # First and last rows of each segment vote right: otherwise a cut may slide over keyword-less
    # rows (ties go to the earliest cut) and the planted position is not the unique optimum.
    for start, stop, d in zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), range(6), strict=True):
        if stop > start:
            votes[start] = votes[stop - 1] = DOMAINS[d]
    cuts = segment(votes)
    assert cuts == [0, *np.cumsum(sizes).tolist()]
    assert segment([]) == [0] * 7


@pytest.mark.heavy  # reads and splits the real corpus
def test_sample_domain_splits_write_every_text_once(tmp_path):
    counts = sample_domain_splits(tmp_path, seed=3)
    assert list(counts) == list(DOMAINS)
    parts = {d: pq.read_table(tmp_path / f"{d}.parquet").to_pandas() for d in DOMAINS}
    for d, part in parts.items():
        assert list(part.columns) == ["text", "label", "domain"] and (part["domain"] == d).all()
        assert counts[d] == {lab: int((part["label"] == lab).sum()) for lab in LABELS}
    texts = pd.concat(parts.values())["text"]
    corpus = load_corpus()
    assert texts.is_unique and set(texts) == set(corpus["text"]) and len(texts) == len(corpus) == 37243
    assert sum(counts["airline"].values()) > 14000 and min(sum(c.values()) for c in counts.values()) > 1500
    again = sample_domain_splits(tmp_path / "again", seed=3)
    assert again == counts
    assert pq.read_table(tmp_path / "again" / "apple.parquet").equals(
        pq.read_table(tmp_path / "apple.parquet")
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_docstring_examples_run():
    assert doctest.testmod(cluster.data.domains).failed == 0
