"""Segmentation end to end on the Ray Data pipeline: `evalctl evaluate` and the Python API on the
synthetic scenes (cluster/data/segmentation_sample.py) with a 32 px segmenter; metrics equal to
scikit-learn's on the flattened pixels, and the same whatever the blocks or the input's form."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, jaccard_score

from cluster.data.segmentation_sample import CLASSES
from cluster.errors import UserError
from cluster.evaluation.run import run_evaluate
from cluster.registry.predictions import read_predictions
from cluster.specs.workloads import DataSpec, EvaluateSpec
from cluster.stats.segmentation import SCORES

K, N = len(CLASSES), 24


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """(root, model dir): test.parquet (24 scenes, 64 px), the same pairs as an images/ + masks/
    tree, and bad.parquet (row 3's mask is not a PNG)."""
    from cluster.data.segmentation_sample import sample_segmentation_splits
    from cluster.models.segmentation import new_segmentation_model
    from cluster.models.segmenter import Segmenter

    root = tmp_path_factory.mktemp("seg-eval")
    sample_segmentation_splits(root, seed=0, sizes={"train": 1, "validation": 1, "test": N})
    model = Segmenter(new_segmentation_model(CLASSES, image_size=32, seed=0), CLASSES).save(root / "m", {})
    t = pq.read_table(root / "test.parquet")
    for sub, col in (("images", "image"), ("masks", "mask")):
        (root / "tree" / sub).mkdir(parents=True)
        for name, data in zip(t["id"].to_pylist(), t[col].to_pylist(), strict=True):
            (root / "tree" / sub / f"{name}.png").write_bytes(data)
    masks = t["mask"].to_pylist()
    masks[3] = b"not a png"
    pq.write_table(
        t.set_column(t.schema.get_field_index("mask"), "mask", pa.array(masks)), root / "bad.parquet"
    )
    return root, model


def seg_spec(data: str, model, out, **kw) -> EvaluateSpec:
    base = {"batch_size": 4, "sort_rows": 4, "rows_per_shard": 8, "bootstrap": 50, "precision": "fp32"}
    data_spec = DataSpec(path=str(data), id_column=kw.pop("id_column", "id"))
    return EvaluateSpec(model=str(model), data=data_spec, out=str(out), **{**base, **kw})


@pytest.fixture(scope="module")
def evaluated(ray_cluster, scenes, tmp_path_factory):
    root, model = scenes
    out = tmp_path_factory.mktemp("seg-out") / "out"
    result = run_evaluate(seg_spec(root / "test.parquet", model, out))
    return result, out


def label_map(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint8)


@pytest.mark.ray
def test_metrics_equal_sklearn_on_the_flattened_pixels(scenes, evaluated):
    root, _ = scenes
    result, out = evaluated
    m = json.loads((out / "metrics.json").read_text())
    assert m == result.metrics and m["task"] == "segmentation" and m["n"] == N
    preds = read_predictions(out / "predictions")
    source = pq.read_table(root / "test.parquet")
    assert preds["row"].tolist() == list(range(N)) and preds["id"].tolist() == source["id"].to_pylist()
    true = [label_map(b) for b in source["mask"].to_pylist()]
    pred = [label_map(b) for b in preds["pred_mask"]]
    assert all(p.shape == t.shape for p, t in zip(pred, true, strict=True))
    y, p = np.concatenate([t.ravel() for t in true]), np.concatenate([q.ravel() for q in pred])
    keep = y != 255
    y, p = y[keep], p[keep]
    cm = confusion_matrix(y, p, labels=list(range(K)))
    assert m["confusion_matrix"] == cm.tolist() and m["pixels"] == int(keep.sum())
    present = sorted(set(y) | set(p))  # IoU and Dice are defined for these classes only
    iou = jaccard_score(y, p, labels=present, average=None)
    support = cm.sum(1)[present]
    expected = {
        "miou": iou.mean(),
        "pixel_accuracy": accuracy_score(y, p),
        "mean_class_accuracy": balanced_accuracy_score(y, p),
        "fw_iou": float((support / support.sum() * iou).sum()),
        "mean_dice": f1_score(y, p, labels=present, average=None).mean(),
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-9), key
    for c, v in zip(present, iou, strict=True):
        assert m["per_class"][CLASSES[c]]["iou"] == pytest.approx(v, abs=1e-9)
    assert set(m["ci95"]) == set(SCORES)
    image_iou = preds["iou"].to_numpy()
    assert m["mean_image_iou"] == pytest.approx(image_iou.mean(), abs=1e-12)
    assert [w["row"] for w in m["worst_images"]] == list(np.argsort(image_iou, kind="stable")[:8])
    assert m["dataset"]["mask_column"] == "mask" and m["bad_rows"]["count"] == 0
    assert "Mean IoU" in (out / "report.html").read_text()


@pytest.mark.ray
def test_masks_are_the_models_own_at_each_images_size(scenes, evaluated):
    """The predicted masks equal a plain single-process forward pass over the same batches."""
    from cluster.data.images import Preprocessing
    from cluster.data.masks import MaskRules, decode_pairs
    from cluster.models.modality import load_trained
    from cluster.models.vision import prepare_for_inference

    root, model = scenes
    _, out = evaluated
    t = pq.read_table(root / "test.parquet")
    d = decode_pairs(
        t["image"].to_pylist(), t["mask"].to_pylist(), Preprocessing(image_size=32), MaskRules(K)
    )
    seg = load_trained(model)
    prepare_for_inference(seg.model, batch_size=4, precision="fp32")
    offline = seg.predict_masks(d.pixels, d.sizes, batch_size=4)
    got = [label_map(b) for b in read_predictions(out / "predictions")["pred_mask"]]
    for a, b in zip(got, offline, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.ray
def test_the_same_metrics_whatever_the_blocks_and_the_inputs_form(scenes, evaluated, tmp_path):
    """Other blocks (12 rows), the images/ + masks/ tree, and a ray.data.Dataset through the Python
    API: every score, interval and worst image the same (bootstrap weights follow the rows)."""
    import ray.data

    from cluster.evaluation.api import evaluate

    root, model = scenes
    first = evaluated[0].metrics
    keys = (*SCORES, "mean_image_iou", "per_class", "confusion_matrix", "ci95", "worst_images")
    runs = {
        "blocks": run_evaluate(seg_spec(root / "test.parquet", model, tmp_path / "a", rows_per_shard=12)),
        "tree": run_evaluate(seg_spec(root / "tree", model, tmp_path / "b", id_column=None)),
        "dataset": evaluate(
            ray.data.from_arrow(pq.read_table(root / "test.parquet")),
            str(model),
            id_column="id",
            batch_size=4,
            bootstrap=50,
            precision="fp32",
            out=str(tmp_path / "c"),
        ),  # fmt: skip
    }
    for name, result in runs.items():
        assert result.metrics["n"] == N, name
        for key in keys:
            assert result.metrics[key] == first[key], (name, key)
    tree_ids = read_predictions(tmp_path / "b" / "predictions")["name"].tolist()
    assert tree_ids == [f"test-{i:05d}" for i in range(N)]  # a tree's pairs by name, the name as id
    assert len(runs["dataset"].metrics["dataset"]["fingerprint"]) == 16


@pytest.mark.ray
def test_a_bad_pair_stops_the_run_or_is_skipped_and_counted(scenes, tmp_path):
    root, model = scenes
    with pytest.raises(UserError, match="^row 3: mask cannot be decoded"):
        run_evaluate(seg_spec(root / "bad.parquet", model, tmp_path / "a"))
    assert not list((tmp_path / "a").rglob("*"))  # nothing half-written left behind
    m = run_evaluate(seg_spec(root / "bad.parquet", model, tmp_path / "b", skip_bad_rows=True)).metrics
    assert m["n"] == N - 1 and m["bad_rows"]["count"] == 1 and m["bad_rows"]["first_rows"][0]["row"] == 3
    assert 3 not in read_predictions(tmp_path / "b" / "predictions")["row"].tolist()


@pytest.mark.ray
@pytest.mark.cli
def test_cli_evaluate_writes_metrics_predictions_and_report(evalctl, scenes, tmp_path):
    root, model = scenes
    out = tmp_path / "out"
    args = ("--model", model, "--data", root / "test.parquet", "--id-column", "id", "--batch-size", 4)
    proc = evalctl("evaluate", *args, "--bootstrap", 20, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "miou" in proc.stdout and "pixel_accuracy" in proc.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "segmentation" and m["n"] == N and 0 <= m["miou"] <= 1
    assert len(read_predictions(out / "predictions")) == N and (out / "report.html").is_file()
    refused = evalctl("evaluate", *args, "--slice-column", "id", "--out", tmp_path / "no")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: model ")
    assert "is a segmentation model: --slice-column" in refused.stderr and not list(tmp_path.glob("no/*"))
