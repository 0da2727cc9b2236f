"""Parallel corpora (cluster/data/parallel.py) and the Bible sample (cluster/data/bible.py)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.data.bible import TEST_BOOKS, VALIDATION_BOOKS, clean_target, sample_translation
from cluster.data.parallel import read_pairs, scan_pairs, subsample
from cluster.errors import UserError
from cluster.specs.workloads import DataSpec

PAIRS = pd.DataFrame(
    {
        "en": [f"sentence number {i}" for i in range(10)],
        "fr": [f"phrase numéro {i}" for i in range(10)],
        "fr2": [f"la phrase {i}" if i % 2 else None for i in range(10)],
        "vid": [f"v{i}" for i in range(10)],
    }
)


def write(path, df):
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=3)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        rows = df.astype(object).where(df.notna(), None).to_dict("records")  # null, not NaN
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def spec(path, **kw):
    return DataSpec(path=str(path), source_column="en", target_column="fr", **kw)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_pairs_in_input_order_with_references(tmp_path, suffix):
    f = write(tmp_path / f"pairs{suffix}", PAIRS)
    got = read_pairs(spec(f, reference_columns="fr2", id_column="vid"), rows_per_shard=4)
    assert got.sources == PAIRS["en"].tolist() and got.targets == PAIRS["fr"].tolist()
    assert got.rows.tolist() == list(range(10))
    assert got.references[0] == PAIRS["fr"].tolist()
    assert got.references[1] == [v if isinstance(v, str) else None for v in PAIRS["fr2"]]


def test_a_uri_reads_like_a_path(tmp_path):
    f = write(tmp_path / "pairs.parquet", PAIRS)
    assert read_pairs(spec(f"file://{f}")).sources == read_pairs(spec(f)).sources


def test_fingerprint_does_not_depend_on_sharding_but_on_content(tmp_path):
    f = write(tmp_path / "pairs.parquet", PAIRS)
    a, b = read_pairs(spec(f), rows_per_shard=2), read_pairs(spec(f), rows_per_shard=100)
    assert a.fingerprint == b.fingerprint
    changed = PAIRS.assign(fr=PAIRS["fr"].str.upper())
    assert read_pairs(spec(write(tmp_path / "other.parquet", changed))).fingerprint != a.fingerprint


def test_empty_target_is_one_line_naming_row_and_column(tmp_path):
    df = PAIRS.copy()
    df.loc[4, "fr"] = "   "
    df.loc[7, "fr"] = None
    f = write(tmp_path / "pairs.parquet", df)
    with pytest.raises(UserError) as err:
        read_pairs(spec(f))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("row 4 of") and 'empty "fr"' in msg and "--skip-bad-rows" in msg


def test_over_long_source_names_row_column_and_limit(tmp_path):
    df = PAIRS.copy()
    df.loc[2, "en"] = "x" * 31
    f = write(tmp_path / "pairs.jsonl", df)
    with pytest.raises(UserError, match=r'^row 2 of .*: "en" has 31 characters > limit 30'):
        read_pairs(spec(f, max_chars=30))


def test_skip_bad_rows_leaves_them_out_and_counts_them(tmp_path):
    df = PAIRS.copy()
    df.loc[1, "en"] = ""
    df.loc[5, "fr"] = "y" * 50
    df.loc[6, "fr2"] = "z" * 50  # an over-long extra reference is bad too
    f = write(tmp_path / "pairs.parquet", df)
    got = read_pairs(spec(f, reference_columns=["fr2"], max_chars=40), skip_bad_rows=True, rows_per_shard=3)
    assert [b.row for b in got.bad] == [1, 5, 6]
    assert got.rows.tolist() == [0, 2, 3, 4, 7, 8, 9]
    assert got.sources == [PAIRS["en"][i] for i in got.rows]
    assert 'empty "en"' in got.bad[0].reason and "limit 40" in got.bad[1].reason


def test_scan_streams_the_same_fingerprint_and_counts_bad_rows(tmp_path):
    df = PAIRS.copy()
    df.loc[3, "fr"] = ""
    f = write(tmp_path / "pairs.parquet", df)
    summary, bad = scan_pairs(spec(f), skip_bad_rows=True, rows_per_shard=4)
    assert summary.num_rows == 10 and bad == 1 and summary.label_counts == {}
    assert summary.fingerprint == read_pairs(spec(f), skip_bad_rows=True).fingerprint
    with pytest.raises(UserError, match='^row 3 of .*: empty "fr"'):
        scan_pairs(spec(f))


def test_missing_column_lists_the_columns(tmp_path):
    f = write(tmp_path / "pairs.parquet", PAIRS)
    with pytest.raises(UserError, match=r'source column "english" not found .*columns: en, fr, fr2, vid'):
        read_pairs(DataSpec(path=str(f), source_column="english", target_column="fr"))


def test_all_rows_bad_is_an_error(tmp_path):
    f = write(tmp_path / "pairs.parquet", PAIRS.assign(fr=""))
    with pytest.raises(UserError, match="no usable rows .10 bad"):
        read_pairs(spec(f), skip_bad_rows=True)


def test_subsample_is_seeded_and_keeps_input_order(tmp_path):
    pairs = read_pairs(spec(write(tmp_path / "pairs.parquet", PAIRS)))
    a, b = subsample(pairs, 4, seed=1), subsample(pairs, 4, seed=1)
    assert a.rows.tolist() == b.rows.tolist() and sorted(a.rows.tolist()) == a.rows.tolist()
    assert len(a) == 4 and subsample(pairs, 4, seed=2).rows.tolist() != a.rows.tolist()
    assert a.sources == [PAIRS["en"][i] for i in a.rows]


# ------------------------------------------------------------------ the Bible sample


def test_versification_markers():
    assert clean_target("(9:3) Je ferai de toi le sujet de ma joie") == "Je ferai de toi le sujet de ma joie"
    assert clean_target("(63:19b) Oh! si tu déchirais les cieux") == "Oh! si tu déchirais les cieux"
    assert clean_target("(9:1) Au chef des chantres. (9:2) Je louerai l'Éternel") is None
    assert clean_target("  Au commencement, Dieu créa les cieux et la terre. ") == (
        "Au commencement, Dieu créa les cieux et la terre."
    )


@pytest.fixture(scope="module")
def bible(tmp_path_factory):
    out = tmp_path_factory.mktemp("bible")
    return out, sample_translation(out)


def test_sample_splits_by_book(bible):
    out, summary = bible
    frames = {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "validation", "test")}
    books = {s: set(f["book"]) for s, f in frames.items()}
    assert not (books["train"] & books["test"]) and not (books["train"] & books["validation"])
    assert books["test"] == {
        "Romans", "1Corinthians", "2Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
        "1Thessalonians", "2Thessalonians", "1Timothy", "2Timothy", "Titus", "Philemon",
    }  # fmt: skip
    assert books["validation"] == {"Ruth", "Esther", "Jonah", "Mark"}
    assert len(TEST_BOOKS) == 13 and len(VALIDATION_BOOKS) == 4 and len(books["train"]) == 49
    assert {s: len(f) for s, f in frames.items()} == {s: v["rows"] for s, v in summary.items()}
    assert sum(len(f) for f in frames.values()) > 30_000
    first = frames["train"].iloc[0]
    assert first["id"] == "Genesis 1:1" and first["source"].startswith("In the beginning God created")
    assert first["target"] == "Au commencement, Dieu créa les cieux et la terre."
    assert not frames["train"]["target"].str.contains(r"\(\d+:\d+").any()


def test_sample_is_deterministic(bible, tmp_path):
    out, _ = bible
    sample_translation(tmp_path)
    for split in ("train", "validation", "test"):
        a, b = (hashlib.sha256((d / f"{split}.parquet").read_bytes()).hexdigest() for d in (out, tmp_path))
        assert a == b, split


@pytest.mark.cli
def test_evalctl_data_sample_translation(evalctl, tmp_path):
    proc = evalctl("data", "sample", "--translation", tmp_path / "tr")
    assert proc.returncode == 0, proc.stderr
    assert "28029" in proc.stdout and "2033" in proc.stdout and "Romans" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "tr").iterdir()) == [
        "test.parquet", "train.parquet", "validation.parquet",
    ]  # fmt: skip
    none = evalctl("data", "sample")
    assert none.returncode == 2 and "--translation DIR" in none.stderr
