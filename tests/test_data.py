"""Reading and validating datasets; the sample corpus splits."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.data.files import check_columns
from cluster.data.scan import iter_tables, read_pandas, scan
from cluster.data.shards import plan_shards, read_shard, shards_for_actors
from cluster.errors import UserError
from cluster.specs.workloads import DataSpec


def write(path, df):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=3)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    return path


DF = pd.DataFrame(
    {"tweet": [f"text {i}" for i in range(10)], "y": ["a", "b"] * 5, "uid": [f"u{i}" for i in range(10)]}
)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_formats_keep_input_order_and_row_numbers(tmp_path, suffix):
    f = write(tmp_path / f"d{suffix}", DF)
    spec = DataSpec(path=str(f), text_column="tweet", label_column="y", id_column="uid")
    got = read_pandas(spec)
    assert got["row"].tolist() == list(range(10))
    assert got["text"].tolist() == DF["tweet"].tolist()
    assert got["label"].tolist() == DF["y"].tolist() and got["id"].tolist() == DF["uid"].tolist()
    assert scan(spec).label_counts == {"a": 5, "b": 5}


def test_directory_glob_and_uri_read_files_in_order(tmp_path):
    write(tmp_path / "d" / "part-0.parquet", DF.iloc[:4])
    write(tmp_path / "d" / "part-1.parquet", DF.iloc[4:])
    for path in [tmp_path / "d", tmp_path / "d" / "*.parquet", f"file://{tmp_path / 'd'}"]:
        got = read_pandas(DataSpec(path=str(path), text_column="tweet", label_column="y"))
        assert got["text"].tolist() == DF["tweet"].tolist(), path
        assert got["row"].tolist() == list(range(10))


def test_parquet_shards_follow_row_groups_and_limit(tmp_path):
    f = write(tmp_path / "d.parquet", DF)
    spec = DataSpec(path=str(f), text_column="tweet", label_column="y")
    _, shards = plan_shards(spec, limit=7, rows_per_shard=3)
    assert [(s.offset, s.num_rows) for s in shards] == [(0, 3), (3, 3), (6, 1)]
    assert sum(t.num_rows for t in iter_tables(spec, limit=7, rows_per_shard=3)) == 7


def test_shards_are_cut_only_at_global_multiples_of_their_size(tmp_path):
    """Whatever the files and row groups, a cut falls at a multiple of rows_per_shard or a file's
    end: which rows share a shard (and so a sort group) depends on their positions alone."""
    big = pd.concat([DF] * 10, ignore_index=True)  # 100 rows: a 37-row file, then 63 in row groups of 11
    write(tmp_path / "d" / "part-0.parquet", big.iloc[:37])
    pq.write_table(
        pa.Table.from_pandas(big.iloc[37:], preserve_index=False), tmp_path / "d" / "part-1.parquet",
        row_group_size=11,
    )  # fmt: skip
    spec = DataSpec(path=str(tmp_path / "d"), text_column="tweet", label_column="y")
    for size in (5, 20, 64):
        _, shards = plan_shards(spec, rows_per_shard=size)
        cuts = [s.offset for s in shards[1:]]
        assert all(c % size == 0 or c == 37 for c in cuts), (size, cuts)
        assert all(s.num_rows <= size for s in shards)
        got = pa.concat_tables([read_shard(s, spec) for s in shards])
        assert got["row"].to_pylist() == list(range(100)) and got["text"].to_pylist() == big["tweet"].tolist()


def test_large_row_groups_and_text_files_split_into_pieces(tmp_path):
    big = pd.concat([DF] * 3, ignore_index=True)  # 30 rows
    pq.write_table(pa.Table.from_pandas(big, preserve_index=False), tmp_path / "b.parquet", row_group_size=25)
    write(tmp_path / "c.csv", big)
    for name in ("b.parquet", "c.csv"):
        spec = DataSpec(path=str(tmp_path / name), text_column="tweet", label_column="y")
        _, shards = plan_shards(spec, rows_per_shard=4)
        assert len(shards) > 2 and sum(s.num_rows for s in shards) == 30
        got = pd.concat([t.to_pandas() for t in iter_tables(spec, rows_per_shard=4)])
        assert got["row"].tolist() == list(range(30)) and got["text"].tolist() == big["tweet"].tolist()


def test_shards_for_actors_cut_at_batch_multiples_and_read_every_row_once(tmp_path):
    big = pd.concat([DF] * 10, ignore_index=True)  # 100 rows: a 37-row file, then 63 in row groups of 25
    write(tmp_path / "d" / "part-0.parquet", big.iloc[:37])
    pq.write_table(
        pa.Table.from_pandas(big.iloc[37:], preserve_index=False),
        tmp_path / "d" / "part-1.parquet",
        row_group_size=25,
    )
    spec = DataSpec(path=str(tmp_path / "d"), text_column="tweet", label_column="y")
    _, shards = plan_shards(spec, rows_per_shard=64)
    cut = shards_for_actors(shards, actors=2, align=8)  # 100 rows / 8 shards -> 13 -> 16 rows each
    assert len(cut) > len(shards) and max(s.num_rows for s in cut) == 16
    starts = [s.offset for s in cut]
    assert all(o % 16 == 0 for o in starts if o not in (0, 37)), starts  # a file's first shard aside
    got = pa.concat_tables([read_shard(s, spec) for s in cut])
    assert got["row"].to_pylist() == list(range(100))
    assert got["text"].to_pylist() == big["tweet"].tolist()
    assert shards_for_actors(shards, actors=1, align=1024) == shards  # never larger than planned


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="data path not found"):
        scan(DataSpec(path=str(tmp_path / "nope.parquet")))


def test_unsupported_extension(tmp_path):
    f = tmp_path / "d.xlsx"
    f.write_text("x")
    with pytest.raises(UserError, match=r"unsupported file type .xlsx .*allowed: .parquet, .csv, .jsonl"):
        scan(DataSpec(path=str(f)))


def test_truncated_parquet(tmp_path):
    f = write(tmp_path / "d.parquet", DF)
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(UserError, match="cannot read .*d.parquet as parquet"):
        scan(DataSpec(path=str(f), text_column="tweet", label_column="y"))


def test_missing_column_lists_existing_columns(tmp_path):
    f = write(tmp_path / "d.parquet", DF)
    with pytest.raises(UserError, match=r'text column "text" not found .*columns: tweet, y, uid'):
        check_columns(DataSpec(path=str(f)))
    f2 = write(tmp_path / "e.parquet", DF.rename(columns={"y": "label"}))
    with pytest.raises(UserError, match=r'label column "labl" .*\(did you mean "label"\?\)'):
        check_columns(DataSpec(path=str(f2), text_column="tweet", label_column="labl"))


def test_null_and_empty_texts_counted_with_first_rows(tmp_path):
    df = DF.copy()
    df.loc[[2, 5], "tweet"] = None
    df.loc[7, "tweet"] = "   "
    f = write(tmp_path / "d.parquet", df)
    with pytest.raises(UserError, match=r"3 row\(s\) .* null or empty \"tweet\" \(first rows: 2, 5, 7\)"):
        scan(DataSpec(path=str(f), text_column="tweet", label_column="y"))


def test_empty_dataset(tmp_path):
    f = write(tmp_path / "d.parquet", DF.iloc[:0])
    with pytest.raises(UserError, match="is empty"):
        scan(DataSpec(path=str(f), text_column="tweet", label_column="y"))


def test_fingerprint_depends_on_content_not_location(tmp_path):
    a = write(tmp_path / "a.parquet", DF)
    b = write(tmp_path / "b.csv", DF)
    c = write(tmp_path / "c.parquet", DF.assign(y=["b", "a"] * 5))
    fp = [scan(DataSpec(path=str(p), text_column="tweet", label_column="y")).fingerprint for p in (a, b, c)]
    assert fp[0] == fp[1] != fp[2]
    d = tmp_path / "d.parquet"
    DF.to_parquet(d, row_group_size=3)
    for rows_per_shard in (1, 2, 4, 100):  # however the rows are sharded
        spec = DataSpec(path=str(d), text_column="tweet", label_column="y")
        assert scan(spec, rows_per_shard=rows_per_shard).fingerprint == fp[0]
        assert (
            scan(
                DataSpec(path=str(b), text_column="tweet", label_column="y"), rows_per_shard=rows_per_shard
            ).fingerprint
            == fp[0]
        )


def test_sample_splits_are_disjoint_and_stratified(sample_dir):
    parts = {n: pd.read_parquet(sample_dir / f"{n}.parquet") for n in ("train", "validation", "test")}
    everything = pd.concat(parts.values())
    assert list(everything.columns) == ["text", "label"]
    assert everything["text"].is_unique
    assert set(everything["label"]) == {"negative", "neutral", "positive"}
    overall = everything["label"].value_counts(normalize=True)
    for part in parts.values():
        share = part["label"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.01
    sizes = {n: len(p) / len(everything) for n, p in parts.items()}
    assert abs(sizes["train"] - 0.8) < 0.01 and abs(sizes["test"] - 0.1) < 0.01
