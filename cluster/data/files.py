"""Data files: locate Parquet, CSV and JSONL inputs (local or URI) and read them.

A dataset is a file, a directory or a glob, on local disk or behind a pyarrow
filesystem URI (``s3://``, ``gs://``, ``file://``); all its files share one format.
CSV and JSONL are text in the DataSpec's ``encoding`` (UTF-8 unless it says otherwise):
a byte that does not decode is an error naming the file, the byte's offset and its line,
never a guess (a latin-1 export read as UTF-8 would turn "ä" into "Ã¤").
"""

from __future__ import annotations

import codecs
import fnmatch
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from cluster.data.storage import is_remote, resolve, storage_error
from cluster.errors import UserError, did_you_mean
from cluster.specs.workloads import DataSpec

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


def resolve_files(path: str) -> tuple[pafs.FileSystem, list[str], str]:
    """Expand a file, directory or glob (local or URI) into sorted files of one format."""
    if not path:
        raise UserError("no data path given")
    fs, root = resolve(path)
    try:
        files = _expand(fs, root, path)
    except OSError as exc:  # S3: access denied, endpoint unreachable, ...
        raise storage_error(exc, path, "read") from exc
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
        if is_remote(shown) and fs.get_file_info(root.split("/", 1)[0]).type == pafs.FileType.NotFound:
            raise UserError(f"data path not found: {shown} (bucket {root.split('/', 1)[0]} does not exist)")
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


def read_file(
    fs: pafs.FileSystem,
    path: str,
    fmt: str,
    columns: list[str] | None = None,
    row_groups: list[int] | None = None,
    encoding: str = "utf-8",
) -> pa.Table:
    """Read one file (or some of its Parquet row groups); raise UserError if unreadable.
    ``encoding``: of a CSV/JSONL file (DataSpec.encoding)."""
    try:
        with fs.open_input_file(path) as f:
            if fmt == "parquet":
                pf = pq.ParquetFile(f)
                return (
                    pf.read_row_groups(row_groups, columns=columns)
                    if row_groups is not None
                    else pf.read(columns=columns)
                )
            text = pa.BufferReader(utf8_bytes(f.read(), encoding, path))
        if fmt == "csv":
            # texts span lines; the input is UTF-8 now (utf8_bytes), pyarrow's default
            table = pacsv.read_csv(text, parse_options=pacsv.ParseOptions(newlines_in_values=True))
        else:
            table = pajson.read_json(text)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise UserError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from exc
    return table.select(columns) if columns else table


_CHUNK = 1 << 20  # UTF-8 is checked a MiB at a time: no str of the whole file


def utf8_bytes(raw: bytes, encoding: str, path: str) -> bytes:
    """``raw`` as UTF-8: checked when ``encoding`` is UTF-8, else decoded from it and re-encoded.
    A byte that does not decode is a UserError naming ``path``, the byte's offset and its line."""
    try:
        if codecs.lookup(encoding).name != "utf-8":
            return raw.decode(encoding).encode("utf-8")
        decoder, view = codecs.getincrementaldecoder("utf-8")(), memoryview(raw)
        for start in range(0, len(raw), _CHUNK):
            pending = len(decoder.getstate()[0])  # bytes of a sequence cut by the previous chunk
            try:
                decoder.decode(view[start : start + _CHUNK], final=start + _CHUNK >= len(raw))
            except UnicodeDecodeError as exc:
                exc.start += start - pending  # the offset in the file
                raise
        return raw
    except UnicodeDecodeError as exc:
        byte, line = raw[exc.start], raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}: byte {exc.start} (0x{byte:02x}, line {line}) is not valid {encoding}; save the file "
            "as UTF-8, or give its encoding (--encoding, data.encoding in YAML: e.g. latin-1, cp1252)"
        ) from exc


def file_schema(fs: pafs.FileSystem, path: str, fmt: str, encoding: str = "utf-8") -> pa.Schema:
    """Column names and types from metadata (Parquet) or the first rows (CSV/JSONL)."""
    if fmt == "parquet":
        try:
            with fs.open_input_file(path) as f:
                return pq.ParquetFile(f).schema_arrow
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from exc
    return read_file(fs, path, fmt, encoding=encoding).schema


def input_column(spec: DataSpec, modality: str = "text") -> str:
    """The column a model of ``modality`` reads: the text column or the image column."""
    return spec.image_column if modality == "image" else spec.text_column


def source_columns(spec: DataSpec, modality: str = "text") -> list[str]:
    cols = [input_column(spec, modality), spec.label_column, spec.id_column, spec.slice_column]
    return list(dict.fromkeys(c for c in cols if c))


def check_columns(spec: DataSpec, modality: str = "text") -> pa.Schema:
    """Fail with the list of existing columns when a named column is missing."""
    fs, files, fmt = resolve_files(spec.path)
    schema = file_schema(fs, files[0], fmt, spec.encoding)
    for role, col in [
        (modality, input_column(spec, modality)),
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
