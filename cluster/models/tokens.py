"""Tokenising in the evaluation's CPU stage with the ``tokenizers`` library itself.

A Hugging Face *fast* tokenizer is a ``tokenizers.Tokenizer`` (its ``tokenizer.json``) plus
bookkeeping; calling it imports transformers, 3-10 s of CPU in every fresh worker process (measured
here: 9.8 s on the busy 2-core machine, against 0.03 s for ``tokenizers``). The CPU stage's tasks
run in fresh workers beside the model actors that import it anyway, so they tokenise with the
``tokenizers`` library directly: the same ids, type ids and attention masks as
``tokenizer(texts, truncation=True, max_length=L)`` (tests/test_tokens.py compares them). A model
directory without ``tokenizer.json`` (a slow, Python tokenizer) is tokenised through transformers.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

KEYS = ("input_ids", "token_type_ids", "attention_mask")


@functools.lru_cache(maxsize=4)
def fast_tokenizer(path: str):
    """The model directory's ``tokenizer.json`` as a ``tokenizers.Tokenizer``, or None without one."""
    from tokenizers import Tokenizer

    f = Path(path) / "tokenizer.json"
    if not f.is_file():
        return None
    tok = Tokenizer.from_file(str(f))
    tok.no_padding()
    tok.no_truncation()
    return tok


@functools.lru_cache(maxsize=4)
def _hf(path: str):
    from transformers import AutoTokenizer

    from cluster.models.modeldir import set_offline

    set_offline()
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def encode(texts: list[str], path: str, max_length: int) -> dict[str, list[list[int]]]:
    """Token ids, type ids and attention masks of ``texts``, truncated to ``max_length`` tokens
    (special tokens included), as ``tokenizer(texts, truncation=True, max_length=max_length)``."""
    tok = fast_tokenizer(path)
    if tok is None:
        return dict(_hf(path)(list(texts), truncation=True, max_length=max_length))
    tok.enable_truncation(max_length=max_length)
    try:
        found = tok.encode_batch(list(texts), add_special_tokens=True)
    finally:
        tok.no_truncation()
    return {
        "input_ids": [e.ids for e in found],
        "token_type_ids": [e.type_ids for e in found],
        "attention_mask": [e.attention_mask for e in found],
    }


def token_counts(texts: list[str], path: str) -> tuple[list[int], list[int]]:
    """(tokens, [UNK] tokens) of each text, without special tokens or truncation (the drift checks'
    text profile: cluster/stats/drift.py ``token_counts``)."""
    tok = fast_tokenizer(path)
    if tok is None:
        from cluster.stats.drift import token_counts as by_transformers

        t, u = by_transformers(texts, tokenizer=_hf(path))
        return t.tolist(), u.tolist()
    unk = tok.token_to_id(_unk_token(path))
    found = tok.encode_batch(list(texts), add_special_tokens=False)
    return [len(e.ids) for e in found], [sum(1 for i in e.ids if i == unk) for e in found]


def _unk_token(path: str) -> str:
    """The unknown token, as transformers reads it (tokenizer_config.json, then special_tokens_map.json)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = Path(path) / name
        value = json.loads(f.read_text()).get("unk_token") if f.is_file() else None
        if isinstance(value, dict):  # an AddedToken written out
            value = value.get("content")
        if value:
            return value
    return "[UNK]"
