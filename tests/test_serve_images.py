"""Serving an image model: predictions, limits, non-image payloads, saliency, `evalctl query --image`."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from cluster.data.image_data import encode_png

pytestmark = pytest.mark.ray


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def digit_pngs(n: int) -> list[bytes]:
    from sklearn.datasets import load_digits

    d = load_digits(n_class=3)
    return [encode_png((p * (255 / 16)).round().astype("uint8")) for p in d.images[:n]]


@pytest.fixture(scope="module")
def served_images(ray_cluster, tiny_image_model_dir):
    from ray import serve

    from cluster.specs.serve import ServeSpec
    from jobs.deploy import deploy
    from tests.pg import free_port

    port = free_port()
    spec = ServeSpec(
        model=str(tiny_image_model_dir),
        port=port,
        precision="fp32",
        cpus_per_replica=0.5,
        max_images=4,
        max_image_bytes=24_000,
        max_explain_pixels=96 * 96,
    )
    deploy(spec, start_head=False, timeout_s=240, no_api_key=True)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_images_are_classified_as_offline(served_images, tiny_image_model_dir):
    from cluster.models.modality import load_trained

    pngs = digit_pngs(3)
    r = httpx.post(f"{served_images}/v1/predict", json={"images": [b64(p) for p in pngs]}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    clf = load_trained(tiny_image_model_dir)
    ref = clf.predict_proba(clf.prepare(pngs).inputs, precision="fp32")
    got = np.array([[p["probs"][lab] for lab in clf.labels] for p in body["predictions"]])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    info = httpx.get(f"{served_images}/v1/model").json()
    assert info["modality"] == "image" and info["limits"]["max_images"] == 4
    assert info["limits"]["max_explain_pixels"] == 96 * 96


def test_texts_to_an_image_model_name_the_images_field(served_images):
    r = httpx.post(f"{served_images}/v1/predict", json={"texts": ["a cat"]}, timeout=30)
    assert r.status_code == 422 and '"images"' in r.json()["detail"], r.text
    r = httpx.post(f"{served_images}/v1/explain", json={"text": "a cat"}, timeout=30)
    assert r.status_code == 422 and '"images"' in r.json()["detail"], r.text


def test_limits_and_non_images_are_refused_with_4xx(served_images):
    png = digit_pngs(1)[0]
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    big = encode_png(noise)  # incompressible: well above the 24,000-byte limit
    cases = [
        ({"images": [b64(png)] * 5}, 413, "too many images"),
        ({"images": [b64(png), b64(big)]}, 413, "images[1]"),
        ({"images": [b64(png), b64(b"%PDF-1.4 not an image")]}, 422, "images[1] cannot be decoded"),
        ({"images": ["not base64!"]}, 422, "base64"),
        ({"images": []}, 422, ""),
        ({"images": [b64(png)], "texts": ["x"]}, 422, "either"),
        ({"image": b64(png)}, 422, ""),
    ]
    for payload, status, words in cases:
        r = httpx.post(f"{served_images}/v1/predict", json=payload, timeout=30)
        assert r.status_code == status and words in r.text, (payload.keys(), r.status_code, r.text[:300])


def test_explain_returns_saliency_at_the_input_size(served_images):
    img = Image.new("L", (40, 24), 0)
    img.paste(255, (10, 5, 30, 20))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    r = httpx.post(f"{served_images}/v1/explain", json={"image": b64(buf.getvalue())}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    sal = body["saliency"]
    assert (sal["width"], sal["height"]) == (40, 24) == (sal["image_width"], sal["image_height"])
    assert "tokens" not in body
    values = np.array(sal["values"])
    assert values.shape == (24, 40) and np.abs(values).max() > 0
    overlay = Image.open(io.BytesIO(base64.b64decode(sal["overlay_png"])))
    assert overlay.size == (40, 24) and overlay.format == "PNG"
    bad = httpx.post(f"{served_images}/v1/explain", json={"image": b64(b"GIF89a broken")}, timeout=30)
    assert bad.status_code == 422 and "image" in bad.json()["detail"]


def test_explaining_a_maximum_size_image_answers_a_bounded_map(served_images):
    """issue 28, point 3: a 4096x4096 PNG (58 KB) was answered with 371 MB of numbers in 12 s."""
    img = Image.new("L", (4096, 4096), 0)
    img.paste(255, (1024, 1024, 3072, 3072))
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # 21 KB: inside the request limits
    r = httpx.post(f"{served_images}/v1/explain", json={"image": b64(buf.getvalue())}, timeout=120)
    assert r.status_code == 200, r.text
    sal = r.json()["saliency"]
    assert (sal["image_width"], sal["image_height"]) == (4096, 4096)
    assert (sal["width"], sal["height"]) == (96, 96)  # max_explain_pixels 96*96
    assert np.array(sal["values"]).shape == (96, 96) and len(r.content) < 400_000
    heat = Image.open(io.BytesIO(base64.b64decode(sal["heatmap_png"])))
    assert heat.size == (96, 96)
    compact = httpx.post(
        f"{served_images}/v1/explain", json={"image": b64(buf.getvalue()), "values": False}, timeout=120
    )
    assert compact.status_code == 200 and "values" not in compact.json()["saliency"]
    assert len(compact.content) < 100_000


def test_evalctl_query_image_and_explain(served_images, evalctl, tmp_path):
    files = []
    for i, png in enumerate(digit_pngs(2)):
        files.append(tmp_path / f"digit{i}.png")
        files[-1].write_bytes(png)
    proc = evalctl(
        "query", "--url", served_images, "--image", files[0], "--image", files[1],
        "--explain", "--saliency-out", tmp_path / "sal",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "digit0.png" in proc.stdout and "saliency map 8x8" in proc.stdout
    assert Image.open(tmp_path / "sal" / "digit1.saliency.png").size == (8, 8)
    missing = evalctl("query", "--url", served_images, "--image", tmp_path / "nope.png")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_fuzzing_the_image_request_schema_finds_no_5xx(served_images):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{served_images}/openapi.json")
    operations = [
        r.ok() for r in schema.get_all_operations() if r.ok().path in ("/v1/predict", "/v1/explain")
    ]
    assert len(operations) == 2
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call(base_url=served_images, timeout=60)
                assert response.status_code < 500, (case.path, case.body, response.text)
                if response.status_code >= 400:
                    assert response.json()["detail"], response.text

            check()
