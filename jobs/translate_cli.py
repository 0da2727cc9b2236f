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


def query_translations(texts: list[str], url: str, as_json: bool, post) -> None:
    """POST /v1/translate (``post``: jobs/query.py's, with its retries); print each text beside its
    translation (or the raw JSON)."""
    from cluster.errors import UserError

    try:
        result = post(url, "/v1/translate", {"texts": texts})
    except UserError as exc:
        if "(404)" not in str(exc) and "(409)" not in str(exc):
            raise
        raise UserError(
            f"the model served at {url} does not translate (no POST /v1/translate); "
            f"GET {url.rstrip('/')}/v1/model says what it serves"
        ) from exc
    if as_json:
        console.print_json(data=result)
        return
    table = Table("text", "translation", title=f"model {result['model']['id']}")
    for text, translation in zip(texts, result["translations"], strict=True):
        table.add_row(text, translation)
    console.print(table)
