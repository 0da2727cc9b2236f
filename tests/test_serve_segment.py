"""Serving a segmentation model: POST /v1/segment's contract (docs/contracts.md), the image limits,
the other routes refusing it by name, and `evalctl query --image` writing masks and overlays."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from cluster.data.segmentation_sample import png

pytestmark = pytest.mark.ray
CLASSES = ["background", "cat", "dog"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def images(sizes) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def seg_model_dir(tmp_path_factory):
    from cluster.models.segmentation import new_segmentation_model
    from cluster.models.segmenter import Segmenter

    model = new_segmentation_model(CLASSES, pretrained=False, image_size=32, seed=0)
    return Segmenter(model, CLASSES).save(tmp_path_factory.mktemp("seg") / "model", {"note": "plumbing"})


@pytest.fixture(scope="module")
def served_seg(ray_cluster, seg_model_dir):
    from ray import serve

    from cluster.specs.serve import ServeSpec
    from jobs.deploy import deploy
    from tests.pg import free_port

    port = free_port()
    spec = ServeSpec(
        model=str(seg_model_dir), port=port, precision="fp32", cpus_per_replica=0.5, max_images=3,
        max_image_bytes=20_000, max_image_pixels=100 * 100,
    )  # fmt: skip
    deploy(spec, start_head=False, timeout_s=240, no_api_key=True)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_masks_equal_offline_at_each_images_size(served_seg, seg_model_dir):
    from cluster.data.images import open_image, to_array
    from cluster.models.modality import load_trained

    sizes = [(32, 32), (50, 20), (17, 41)]
    data = images(sizes)
    r = httpx.post(f"{served_seg}/v1/segment", json={"images": [b64(d) for d in data]}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["labels"] == CLASSES and len(body["segmentations"]) == 3
    seg = load_trained(seg_model_dir)
    opened = [open_image(d) for d in data]
    pixels = np.stack([to_array(img, seg.model.config.preprocessing) for img in opened])
    offline = seg.predict_masks(pixels, sizes)
    for s, size, want in zip(body["segmentations"], sizes, offline, strict=True):
        mask_img = Image.open(io.BytesIO(base64.b64decode(s["mask_png"])))
        assert mask_img.format == "PNG" and mask_img.mode == "P" and (s["width"], s["height"]) == size
        mask = np.asarray(mask_img)
        np.testing.assert_array_equal(mask, want)  # a label map: the values are the class ids
        assert list(s["shares"]) == CLASSES and sum(s["shares"].values()) == pytest.approx(1.0)
        for i, name in enumerate(CLASSES):
            assert s["shares"][name] == pytest.approx((mask == i).mean())
    info = httpx.get(f"{served_seg}/v1/model", timeout=30).json()
    assert info["task"] == "segmentation" and info["modality"] == "image" and info["labels"] == CLASSES


def test_limits_and_bad_images_are_refused_with_4xx(served_seg):
    ok = b64(images([(20, 20)])[0])
    noise = np.random.default_rng(1).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    cases = [
        ({"images": [ok] * 4}, 413, "too many images: 4 > limit 3"),
        ({"images": [ok, b64(png(noise))]}, 413, "images[1] is about"),
        (
            {"images": [ok, b64(png(np.zeros((101, 100, 3), np.uint8)))]},
            422,
            "images[1] is 100x101 = 10100 pixels",
        ),
        ({"images": [b64(b"%PDF-1.4 no image")]}, 422, "images[0] cannot be decoded"),
        ({"images": ["not base64!"]}, 422, "base64"),
        ({"images": []}, 422, ""),
        ({"texts": ["a cat"]}, 422, ""),
    ]
    for payload, status, words in cases:
        r = httpx.post(f"{served_seg}/v1/segment", json=payload, timeout=60)
        assert r.status_code == status and words in r.text, (status, r.status_code, r.text[:300])


def test_classification_routes_name_the_segment_route(served_seg):
    ok = b64(images([(20, 20)])[0])
    for path, payload in (("/v1/predict", {"images": [ok]}), ("/v1/explain", {"image": ok})):
        r = httpx.post(f"{served_seg}{path}", json=payload, timeout=30)
        assert r.status_code == 422 and "POST /v1/segment" in r.json()["detail"], r.text


def test_evalctl_query_image_writes_mask_and_overlay(served_seg, evalctl, tmp_path):
    files = []
    for i, data in enumerate(images([(40, 30), (32, 32)])):
        files.append(tmp_path / f"scene{i}.png")
        files[-1].write_bytes(data)
    proc = evalctl(
        "query", "--url", served_seg, "--image", files[0], "--image", files[1], "--out", tmp_path / "o"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scene0.png" in proc.stdout and "40x30" in proc.stdout
    mask = Image.open(tmp_path / "o" / "scene0.mask.png")
    overlay = Image.open(tmp_path / "o" / "scene0.overlay.png")
    assert mask.size == overlay.size == (40, 30) and mask.mode == "P" and overlay.mode == "RGB"
    assert np.asarray(mask).max() < len(CLASSES)
