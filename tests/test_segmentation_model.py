"""The segmentation model (cluster/models/segmentation.py, segmenter.py): ImageNet encoder, model
directories loaded by the shared resolve/load functions, loss, inference at each image's size."""

import json

import numpy as np
import pytest
import torch

from cluster.errors import UserError
from cluster.models.segmentation import load_segmentation_model, new_segmentation_model
from cluster.models.segmenter import Segmenter, masks_at, soft_dice_loss
from cluster.specs.search_space import TrialParams

CLASSES = ["background", "cat", "dog"]


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory):
    model = new_segmentation_model(CLASSES, pretrained=True, image_size=32, seed=0)
    out = tmp_path_factory.mktemp("seg") / "model"
    return Segmenter(model, CLASSES).save(out, {"note": "test"})


def test_encoder_is_the_packaged_imagenet_one_and_random_init_differs():
    from cluster.models.vision import load_pretrained_state

    state, _ = load_pretrained_state()
    pre = new_segmentation_model(CLASSES, pretrained=True, image_size=32)
    rnd = new_segmentation_model(CLASSES, pretrained=False, image_size=32)
    w = "_blocks.3._depthwise_conv.weight"
    assert torch.equal(pre.net.state_dict()[w], state[w])
    assert not torch.equal(rnd.net.state_dict()[w], state[w])
    assert pre.origin["init"] == "imagenet" and rnd.origin["init"] == "random"
    # the same seed, the same decoder either way
    assert torch.equal(pre.decoder.classifier.weight, rnd.decoder.classifier.weight)
    assert pre(torch.zeros(2, 3, 32, 32)).logits.shape == (2, 3, 32, 32)


def test_directory_round_trip_through_the_shared_loaders(seg_dir):
    from cluster.models.modality import load_trained, model_modality, model_task
    from cluster.models.resolve import resolve_model

    cfg = json.loads((seg_dir / "config.json").read_text())
    assert cfg["modality"] == "image" and cfg["task"] == "segmentation" and cfg["num_labels"] == 3
    assert model_modality(seg_dir) == "image" and model_task(seg_dir) == "segmentation"
    ref = resolve_model(str(seg_dir))
    assert ref.labels == CLASSES and ref.modality == "image"
    seg = load_trained(seg_dir)
    assert isinstance(seg, Segmenter) and seg.labels == CLASSES
    x = torch.randn(2, 3, 32, 32)
    again = load_segmentation_model(seg_dir)
    torch.testing.assert_close(seg.model(x).logits, again(x).logits)
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in seg_dir.iterdir())


def test_a_bad_config_is_one_line(seg_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(seg_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["decoder"] = "deeplab"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="decoder 'deeplab'; supported: efficientnet-lite0 / lraspp-unet"):
        load_segmentation_model(bad)


def test_training_steps_lower_the_loss_and_ignore_unlabelled_pixels():
    torch.manual_seed(0)
    seg = Segmenter(new_segmentation_model(CLASSES, pretrained=True, image_size=32), CLASSES)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    masks = np.zeros((8, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 1
    masks[:, :4] = 255
    batch = seg.encode(pixels, np.arange(8))
    y = torch.as_tensor(masks)
    opt = torch.optim.AdamW(seg.model.parameters(), lr=3e-3)
    seg.model.train()
    losses = []
    for _ in range(15):
        loss = seg.loss(batch, y, TrialParams(dice_weight=0.5, learning_rate=1e-3))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    # the loss is the cross-entropy over the labelled pixels only
    seg.model.eval()
    with torch.no_grad():
        logits = seg.logits(batch).float().permute(0, 2, 3, 1)
        valid = y != 255
        manual = torch.nn.functional.cross_entropy(logits[valid], y[valid].long())
        assert float(seg.loss(batch, y, TrialParams(learning_rate=1e-3))) == pytest.approx(
            float(manual), rel=1e-5
        )


def test_soft_dice_is_zero_for_a_perfect_prediction():
    y = torch.tensor([[[0, 1], [2, 255]]])
    probs = torch.nn.functional.one_hot(torch.where(y == 255, 0, y), 3).permute(0, 3, 1, 2).float()
    assert float(soft_dice_loss(probs, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(1 - probs, y)) > 0.5


def test_masks_at_each_images_size():
    probs = np.zeros((2, 4, 4), np.float32)
    probs[1, :, 2:] = 1.0  # right half: class 1
    m = masks_at(probs, (8, 6))
    assert m.shape == (6, 8) and m.dtype == np.uint8
    assert (m[:, :3] == 0).all() and (m[:, 5:] == 1).all()
    np.testing.assert_array_equal(masks_at(probs, (4, 4)), probs.argmax(0))


def test_folded_inference_gives_the_same_masks(seg_dir):
    from cluster.models.modality import load_trained
    from cluster.models.vision import prepare_for_inference

    seg = load_trained(seg_dir)
    pixels = np.random.default_rng(1).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    before = seg.predict_proba(pixels)
    prepare_for_inference(seg.model, batch_size=4)
    after = seg.predict_proba(pixels)
    np.testing.assert_allclose(after, before, atol=1e-4)
    assert after.shape == (4, 3, 32, 32)
    assert [m.shape for m in seg.predict_masks(pixels, [(40, 20)] * 4)] == [(20, 40)] * 4


def test_training_start_refuses_a_classifier_and_checks_classes(seg_dir, tiny_image_model_dir):
    from cluster.models.modality import load_for_training

    with pytest.raises(UserError, match="is a classification model; a segmentation sweep starts from"):
        load_for_training(tiny_image_model_dir, CLASSES, task="segmentation")
    with pytest.raises(UserError, match="predicts .* not the spec's classes"):
        load_for_training(seg_dir, ["background", "cat"], task="segmentation")
    fresh = load_for_training(seg_dir, CLASSES, init="random", image_size=32, task="segmentation")
    assert fresh.model.origin["init"] == "random"


def test_the_decoder_trains_at_its_own_rate_and_classifiers_are_unchanged(tiny_image_model_dir):
    from cluster.models.vision import load_image_model
    from cluster.train.step import make_optimizer

    model = new_segmentation_model(CLASSES, pretrained=False, image_size=32)
    opt, _ = make_optimizer(model, TrialParams(learning_rate=1e-3, decoder_lr_scale=10.0), 100)
    decoder = {id(p) for p in model.decoder.parameters()}
    for group in opt.param_groups:
        fast = {id(p) in decoder for p in group["params"]}
        assert len(fast) <= 1  # a group is all decoder or all encoder
        assert group["initial_lr"] == pytest.approx(1e-2 if fast == {True} else 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    clf_opt, _ = make_optimizer(
        load_image_model(tiny_image_model_dir), TrialParams(learning_rate=1e-3, decoder_lr_scale=10.0), 100
    )
    assert len(clf_opt.param_groups) == 2 and {g["initial_lr"] for g in clf_opt.param_groups} == {1e-3}
