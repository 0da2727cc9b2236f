"""Reading and validating datasets; the sample corpus splits."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.data.blocks import plan_blocks, read_block
from cluster.data.files import check_columns
from cluster.data.scan import iter_tables, read_pandas, scan
from cluster.data.shards import plan_shards, read_shard
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


def test_blocks_spread_a_small_input_at_batch_multiples_and_read_every_row_once(tmp_path):
    """The evaluation's read blocks (cluster/data/blocks.py): an image input smaller than the actors'
    share is cut into more, smaller blocks, still at global multiples of the batch size."""
    big = pd.concat([DF] * 10, ignore_index=True)  # 100 rows: a 37-row file, then 63 in row groups of 25
    write(tmp_path / "d" / "part-0.parquet", big.iloc[:37])
    pq.write_table(
        pa.Table.from_pandas(big.iloc[37:], preserve_index=False),
        tmp_path / "d" / "part-1.parquet",
        row_group_size=25,
    )
    spec = DataSpec(path=str(tmp_path / "d"), text_column="tweet", label_column="y")
    _, blocks = plan_blocks(spec, None, rows_per_block=64, align=8, min_blocks=8)  # 100 / 8 -> 13 -> 16
    assert len(blocks) > 2 and max(b.num_rows for b in blocks) == 16
    starts = [b.offset for b in blocks]
    assert all(o % 16 == 0 for o in starts if o not in (0, 37)), starts  # a file's first block aside
    got = pa.concat_tables([read_block(b, {"text": "tweet", "label": "y"}, {"_side": "x"}) for b in blocks])
    assert got["row"].to_pylist() == list(range(100))
    assert got["text"].to_pylist() == big["tweet"].tolist() and set(got["_side"].to_pylist()) == {"x"}
    _, few = plan_blocks(spec, None, rows_per_block=64, align=8, min_blocks=1)
    assert [b.offset for b in few] == [0, 37, 64]  # never smaller than asked unless spread


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


def latin1_csv(path, filler_rows: int = 0):
    """A CSV written as latin-1 (äó are one byte each), after ``filler_rows`` ASCII rows."""
    rows = [f"filler text {i:07d},a" for i in range(filler_rows)] + ["caf\u00e4 \u00f3 ok,b", "plain,a"]
    path.write_bytes(("text,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    return path


@pytest.mark.parametrize("filler_rows", [0, 60_000])  # in the first MiB, and after it
def test_a_csv_that_is_not_utf8_is_refused_naming_the_byte(tmp_path, filler_rows):
    """issue 28, point 4: in the first MiB it was read as latin-1 silently (äó became Ã¤Ã³);
    after it, an ArrowInvalid traceback."""
    f = latin1_csv(tmp_path / "d.csv", filler_rows)
    offset = f.read_bytes().index(b"\xe4")
    with pytest.raises(UserError) as err:
        scan(DataSpec(path=str(f)))
    msg = str(err.value)
    assert f"d.csv: byte {offset} (0xe4, line {filler_rows + 2}) is not valid utf-8" in msg, msg
    assert "--encoding" in msg and "\n" not in msg
    got = read_pandas(DataSpec(path=str(f), encoding="latin-1"))  # said explicitly: read as such
    assert got["text"].tolist()[-2:] == ["caf\u00e4 \u00f3 ok", "plain"]


def test_jsonl_that_is_not_utf8_is_refused_and_encodings_are_checked(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes('{"text": "ok", "label": "a"}\n{"text": "caf\u00e4", "label": "b"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"d.jsonl: byte 42 \(0xe4, line 2\) is not valid utf-8"):
        scan(DataSpec(path=str(f)))
    assert read_pandas(DataSpec(path=str(f), encoding="latin-1"))["text"].tolist() == ["ok", "caf\u00e4"]
    with pytest.raises(ValueError, match="unknown encoding 'latin-9x'"):
        DataSpec(path=str(f), encoding="latin-9x")


def test_utf8_is_checked_across_chunk_boundaries():
    from cluster.data.files import utf8_bytes

    mib = 1 << 20
    straddling = b"a" * (mib - 1) + "\u00e4".encode() + b"b" * 10  # a 2-byte character cut by the chunk
    assert utf8_bytes(straddling, "utf-8", "x.csv") is straddling
    # (cut, where it fails): inside the straddling character its first byte is where decoding fails
    for cut, bad_at in ((mib - 1, mib - 1), (mib, mib - 1), (mib + 1, mib + 1), (mib + 11, mib + 11)):
        raw = straddling[:cut] + b"\xff" + b"c" * mib
        with pytest.raises(UserError, match=rf"x.csv: byte {bad_at} \(0x"):
            utf8_bytes(raw, "utf8", "x.csv")


@pytest.mark.cli
def test_data_check_refuses_a_latin1_csv_in_one_line(evalctl, tmp_path):
    f = latin1_csv(tmp_path / "d.csv")
    proc = evalctl("data", "check", f)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is not valid utf-8" in proc.stderr and "Traceback" not in proc.stderr
    ok = evalctl("data", "check", f, "--encoding", "latin-1")
    assert ok.returncode == 0 and "2 rows" in ok.stdout, ok.stderr


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
