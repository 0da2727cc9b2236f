"""Scoring a dynamic batch so that one request's bad input never fails the others sharing it."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("ray.serve")


def score_each(score: Callable[[list[str]], object], texts: list[str]) -> list:
    """``score(texts)`` as a list of rows. When the batch fails, each text is scored alone, so a
    text that fails gets its exception in its place and every other text its row: one bad
    request never fails the requests it shared a batch with.

    >>> score_each(lambda ts: [len(t) / 0 if t == "bad" else len(t) for t in ts], ["ab", "bad"])
    [2, ZeroDivisionError('division by zero')]
    """
    try:
        return list(score(texts))
    except Exception as exc:
        if len(texts) == 1:
            return [exc]
        logger.warning("a batch of %d texts failed (%r); scoring them one by one", len(texts), exc)
    rows = []
    for text in texts:
        try:
            rows.append(score([text])[0])
        except Exception as exc:  # noqa: BLE001 - handed to the request that sent this text
            rows.append(exc)
    return rows


def row_or_raise(row):
    """A row from :func:`score_each`, or its exception raised in the request that owns it."""
    if isinstance(row, BaseException):
        raise row
    return row
