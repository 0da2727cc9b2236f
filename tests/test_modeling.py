"""Resolving MODEL arguments, loading, batched inference and model directories."""

import json

import numpy as np
import pytest
import torch

from cluster.errors import UserError
from cluster.models.device import resolve_precision
from cluster.models.modeldir import classifier_labels, read_lineage
from cluster.models.resolve import resolve_model
from cluster.models.text import load_classifier, predict_proba, save_model_dir
from cluster.registry.record import Registry

LABELS = ["negative", "neutral", "positive"]


def test_resolve_directory_alias_id_and_base(tiny_model_dir, evalcluster_home):
    reg = Registry()
    assert resolve_model(str(tiny_model_dir), reg).labels == LABELS
    mid = reg.register_model(tiny_model_dir)
    reg.set_alias("best", mid)
    assert resolve_model("best", reg).model_id == mid
    assert resolve_model(mid, reg).path == tiny_model_dir
    base = resolve_model("base", reg)
    assert base.model_id == "base" and base.labels is None  # an encoder, no classifier yet


def test_unresolvable_model_says_what_was_tried(evalcluster_home):
    reg = Registry()
    with pytest.raises(UserError, match=r'MODEL "bset" resolves to nothing: tried "base", a directory'):
        resolve_model("bset", reg)


def test_model_dir_without_id2label_is_refused(tmp_path, tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    bad = tmp_path / "noid"
    bad.mkdir()
    for f in tiny_model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg.pop("id2label")
    (bad / "config.json").write_text(json.dumps(cfg))
    assert classifier_labels(bad) is None
    with pytest.raises(UserError, match="has no id2label"):
        load_classifier(bad)


def test_predict_proba_sorted_batches_match_one_by_one(tiny_model_dir):
    model, tok, labels = load_classifier(tiny_model_dir)
    texts = ["short", "a much longer text " * 8, "mid length text here", "x", "another one"]
    probs = predict_proba(model, tok, texts, batch_size=2)
    with torch.inference_mode():
        ref = np.stack(
            [torch.softmax(model(**tok(t, return_tensors="pt")).logits, -1)[0].numpy() for t in texts]
        )
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_save_model_dir_is_loadable_and_carries_lineage(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model, tok, _ = load_classifier(tiny_model_dir)
    out = save_model_dir(model, tok, tmp_path / "copy", {"sweep_run": "s1"})
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".copy.*"))
    loaded = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    assert loaded.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert read_lineage(out) == {"sweep_run": "s1"}
    with pytest.raises(UserError, match="already exists"):
        save_model_dir(model, tok, out, {})


def test_precision_resolution():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


@pytest.fixture
def pickled_model_dir(tmp_path, tiny_model_dir):
    """The tiny model with its weights as a pickled pytorch_model.bin only (no safetensors)."""
    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name != "model.safetensors":
            (d / f.name).write_bytes(f.read_bytes())
    model, _, _ = load_classifier(tiny_model_dir)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    return d


def test_a_model_dir_without_safetensors_is_refused_when_resolved(pickled_model_dir, evalcluster_home):
    reg = Registry()
    with pytest.raises(UserError, match="safetensors weights required") as info:
        resolve_model(str(pickled_model_dir), reg)
    assert "pytorch_model.bin" in str(info.value) and "\n" not in str(info.value)
    reg.set_alias("pickled", reg.register_model(pickled_model_dir))
    with pytest.raises(UserError, match="safetensors weights required"):
        resolve_model("pickled", reg)
    with pytest.raises(UserError, match="safetensors weights required"):
        load_classifier(pickled_model_dir)


@pytest.mark.cli
@pytest.mark.parametrize("command", ["evaluate", "sweep", "serve deploy"])
def test_cli_refuses_pickled_weights_before_any_actor(
    command, pickled_model_dir, tmp_path, evalctl, evalcluster_home
):
    data = tmp_path / "d.csv"
    data.write_text("text,label\ngood,positive\nbad,negative\nmeh,neutral\n")
    args = {
        "evaluate": ["evaluate", "--model", pickled_model_dir, "--data", data],
        "sweep": ["sweep", "--config", tmp_path / "s.yaml"],
        "serve deploy": ["serve", "deploy", "--model", pickled_model_dir],
    }[command]
    (tmp_path / "s.yaml").write_text(
        f"model: {pickled_model_dir}\ntrain: {{path: {data}}}\nvalidation: {{path: {data}}}\n"
    )
    proc = evalctl(*args, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0 and "safetensors weights required" in proc.stderr
    assert "ActorDiedError" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    assert Registry().list_runs() == [] and Registry().list_models() == []
