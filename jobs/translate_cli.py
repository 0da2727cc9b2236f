"""The translation pieces of the command line: the sample's summary, `evalctl query --translate`."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from jobs.entry import console


def print_translation_sample(out: Path) -> None:
    """Write the Bible sample (cluster/data/bible.py) and print its splits and books."""
    from cluster.data.bible import sample_translation

    summary = sample_translation(out)
    table = Table(
        "split", "pairs", "books", title=f"English -> French verse pairs (KJV -> Segond 1910) -> {out}"
    )
    for split, info in summary.items():
        books = info["books"]
        shown = ", ".join(books) if len(books) <= 13 else f"{len(books)} books: {', '.join(books[:5])}, ..."
        table.add_row(split, str(info["rows"]), shown)
    console.print(table)
    console.print("columns: id, book, source (English), target (French)", markup=False)
