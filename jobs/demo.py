"""`evalctl demo`: the user paths on embedded defaults, small and quick."""

from __future__ import annotations

import time
from pathlib import Path

from jobs.entry import console


def run_demo(out: Path) -> None:
    """Sample splits -> base model -> a few classifications (later: sweep, evaluate, serve)."""
    from cluster.data import LABELS, sample_splits
    from cluster.modeling import base_model_dir, load_classifier, predict_proba

    t0 = time.perf_counter()
    console.rule("1. sample data")
    counts = sample_splits(out)
    for split, by_label in counts.items():
        console.print(f"{split:>10}: {sum(by_label.values()):>6} rows  {by_label}")

    console.rule("2. base model")
    model, tok, labels = load_classifier(base_model_dir(), labels=LABELS)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"loaded {base_model_dir()} ({n_params / 1e6:.1f}M parameters, new untrained classification head)"
    )
    texts = [
        "I love this airline, great service!",
        "The flight was delayed again.",
        "Meeting at 3pm in room 4.",
    ]
    probs = predict_proba(model, tok, texts)
    for text, p in zip(texts, probs, strict=True):
        console.print(f"  {labels[p.argmax()]:>8} {p.max():.2f}  {text}")
    console.print(
        f"demo done in {time.perf_counter() - t0:.1f}s; the untrained head is random "
        "until a sweep fine-tunes it."
    )
