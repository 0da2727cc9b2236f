"""Deterministic text perturbations for robustness runs.

Every perturbation is a pure function of (text, seed, row): its random choices
come from a generator seeded with :func:`cluster.stats.rowhash.hash64` of the row id,
salted with the seed and the perturbation, so a row is perturbed the same way on
any shard, worker or rerun. ``rate`` is the probability that each unit is hit:

    identity    nothing (a control: 0 flips, McNemar p = 1)
    typo        each letter: swapped with the next one, dropped, doubled, or replaced by a
                QWERTY neighbour (case kept)
    case        each word: UPPER, lower, Title or sWAP case. A letter changes only when
                lower-casing undoes it, so an uncased tokenizer sees the same tokens (0 flips)
    punct       each word: its punctuation removed, or one of ``.,!?;:`` appended
    whitespace  each gap between words removed (words fused); each word of 4+ characters
                split in two by a space
    homoglyph   each letter with a Cyrillic look-alike (a, c, e, o, p, x, y, ...) replaced by it

Example::

    >>> perturb_text("Delayed again, thanks United", kind="case", rate=1.0, seed=0, row=7)
    'DELAYED again, Thanks uNITED'
    >>> perturb(["same text"], kind="identity", rate=1.0, seed=3, rows=[0])
    ['same text']
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BeforeValidator, Field

from cluster.errors import UserError, did_you_mean
from cluster.stats.rowhash import hash64

PERTURBATIONS = ("identity", "typo", "case", "punct", "whitespace", "homoglyph")
PUNCTUATION = ".,!?;:"
_WORD = re.compile(r"\S+")
_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
HOMOGLYPHS = dict(
    zip(
        "acejiopsxyABCEHIJKMOPSTXY",
        "\u0430\u0441\u0435\u0458\u0456\u043e\u0440\u0455\u0445\u0443"
        "\u0410\u0412\u0421\u0415\u041d\u0406\u0408\u041a\u041c\u041e\u0420\u0405\u0422\u0425\u04ae",
        strict=True,
    )
)


def perturb(
    texts: Sequence[str], *, kind: str, rate: float = 0.1, seed: int = 0, rows: Sequence[int]
) -> list[str]:
    """Perturb a batch: ``rows`` are the texts' 0-based input positions (they seed each text)."""
    fn = _function(kind)
    check_rate(rate)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != len(texts):
        raise UserError(f"rows must have one entry per text ({len(texts)}), got {len(rows)}")
    seeds = hash64(rows, _salt(seed, kind))
    return [fn(t, rate, random.Random(int(s))) for t, s in zip(texts, seeds, strict=True)]


def perturb_text(text: str, *, kind: str, rate: float = 0.1, seed: int = 0, row: int = 0) -> str:
    """One text, as :func:`perturb` would for this row."""
    return perturb([text], kind=kind, rate=rate, seed=seed, rows=[row])[0]


def check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"--rate must be between 0 and 1 (a probability per character or word), got {rate}")


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """Validate a list of perturbation names (e.g. from ``--perturb typo,case``)."""
    for kind in kinds:
        _function(kind)
    return list(kinds)


def _split(value):
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _known(kinds: list[str]) -> list[str]:
    try:
        check_kinds(kinds)
    except UserError as exc:
        raise ValueError(str(exc)) from exc
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"each perturbation once, got {', '.join(kinds)}")
    return kinds


# A spec field (cluster/specs/workloads.py): "typo,case" or a list of names, each known, each once.
Perturbations = Annotated[list[str], BeforeValidator(_split), Field(min_length=1), AfterValidator(_known)]
Perturbation = Annotated[str, AfterValidator(lambda kind: _known([kind])[0])]  # one name


def _function(kind: str) -> Callable[[str, float, random.Random], str]:
    if kind not in PERTURBATIONS:
        raise UserError(
            f'unknown perturbation "{kind}"{did_you_mean(kind, PERTURBATIONS)}; '
            f"choose from {', '.join(PERTURBATIONS)}"
        )
    return globals()[f"_{kind}"]


def _salt(seed: int, kind: str) -> int:
    return (int(seed) * 0x100000001B3 + PERTURBATIONS.index(kind) + 1) & 0xFFFFFFFFFFFFFFFF


# ------------------------------------------------------------------ the perturbations


def _identity(text: str, rate: float, rng: random.Random) -> str:
    return text


def _typo(text: str, rate: float, rng: random.Random) -> str:
    out, chars, i = [], list(text), 0
    while i < len(chars):
        c = chars[i]
        if not c.isalpha() or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        op = rng.choice(("swap", "drop", "double", "neighbour"))
        if op == "swap" and i + 1 < len(chars):
            out += [chars[i + 1], c]
            i += 2
            continue
        if op == "double":
            out += [c, c]
        elif op == "neighbour":
            out.append(_neighbour(c, rng))
        elif op == "swap":  # last character: nothing to swap with
            out.append(c)
        i += 1  # "drop" appends nothing
    return "".join(out)


def _neighbour(c: str, rng: random.Random) -> str:
    for r, row in enumerate(_KEYBOARD):
        j = row.find(c.lower())
        if j >= 0:
            near = [row[k] for k in (j - 1, j + 1) if 0 <= k < len(row)]
            near += [_KEYBOARD[rr][j] for rr in (r - 1, r + 1) if 0 <= rr < 3 and j < len(_KEYBOARD[rr])]
            new = rng.choice(near)
            return new.upper() if c.isupper() else new
    return c


def _case(text: str, rate: float, rng: random.Random) -> str:
    def change(m: re.Match) -> str:
        word = m.group()
        if rng.random() >= rate:
            return word
        style = rng.choice((str.upper, str.lower, str.title, str.swapcase))
        return "".join(_same_lower(c, n) for c, n in zip(word, _per_char(style, word), strict=True))

    return _WORD.sub(change, text)


def _per_char(style, word: str) -> list[str]:
    """The style applied, one output per input character (title case needs the word)."""
    if style is str.title:
        styled = word.title()
        return list(styled) if len(styled) == len(word) else list(word)
    return [style(c) for c in word]


def _same_lower(c: str, new: str) -> str:
    """``new`` if lower-casing maps it back to what ``c`` lower-cases to (1 char), else ``c``."""
    return new if len(new) == 1 and new.lower() == c.lower() else c


def _punct(text: str, rate: float, rng: random.Random) -> str:
    def change(m: re.Match) -> str:
        word = m.group()
        if rng.random() >= rate:
            return word
        stripped = "".join(c for c in word if c.isalnum())
        if stripped != word and stripped and rng.random() < 0.5:
            return stripped
        return word + rng.choice(PUNCTUATION)

    return _WORD.sub(change, text)


def _whitespace(text: str, rate: float, rng: random.Random) -> str:
    def split(m: re.Match) -> str:
        word = m.group()
        if len(word) < 4 or rng.random() >= rate:
            return word
        cut = rng.randrange(1, len(word))
        return word[:cut] + " " + word[cut:]

    def join(m: re.Match) -> str:
        return "" if m.start() > 0 and m.end() < len(text) and rng.random() < rate else m.group()

    return _WORD.sub(split, re.sub(r"\s+", join, text))


def _homoglyph(text: str, rate: float, rng: random.Random) -> str:
    return "".join(HOMOGLYPHS[c] if c in HOMOGLYPHS and rng.random() < rate else c for c in text)
