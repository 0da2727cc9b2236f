"""The CPU stage's tokeniser (cluster/models/tokens.py, the ``tokenizers`` library without
transformers) gives what the model's Hugging Face tokenizer gives."""

import pandas as pd

from cluster.models.modeldir import base_model_dir
from cluster.models.tokens import encode, token_counts
from cluster.stats.drift import token_counts as hf_token_counts

ODD = [
    "",
    "   ",
    "naïve café ☕ résumé",
    "ALL CAPS and 123,456.78!!!",
    "@user #tag http://t.co/x ≠ ∞ 🤖" * 20,
]


def test_fast_tokenisation_equals_the_hugging_face_tokenizer(sample_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    texts = pd.read_parquet(sample_dir / "test.parquet")["text"].head(200).tolist() + ODD
    for model_dir in (tiny_model_dir, base_model_dir()):
        hf = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        for max_length in (8, 64, 512):
            want = hf(texts, truncation=True, max_length=max_length)
            got = encode(texts, str(model_dir), max_length)
            for key in want:
                assert got[key] == want[key], (model_dir, max_length, key)
        t, u = token_counts(texts, str(model_dir))
        want_t, want_u = hf_token_counts(texts, tokenizer=hf)
        assert t == want_t.tolist() and u == want_u.tolist()
