"""The segmentation evaluation task's steps (cluster/evaluation/segment.py, segment_model.py), called
as the Ray Data pipeline calls them: preprocess a block, predict its model batches, statistics and
predictions of any partition of the rows, finalize. Exact whatever the partition; bad pairs skipped."""

import base64
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.data.segmentation_sample import CLASSES, sample_segmentation_splits
from cluster.evaluation.segment import BAD, BATCH, ROW, SegmentTask
from cluster.specs.workloads import PipelineSpec
from cluster.stats import segmentation as seg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from cluster.models.segmentation import new_segmentation_model
    from cluster.models.segmenter import Segmenter

    root = tmp_path_factory.mktemp("segtask")
    sample_segmentation_splits(root, seed=0, sizes={"train": 1, "validation": 1, "test": 20})
    model = new_segmentation_model(CLASSES, pretrained=True, image_size=32, seed=0)
    path = Segmenter(model, CLASSES).save(root / "model", {})
    t = pq.read_table(root / "test.parquet")
    images, masks = t["image"].to_pylist(), t["mask"].to_pylist()
    masks[5] = b"not a png"  # a bad pair
    block = pa.table({ROW: pa.array(np.arange(20)), "image": images, "mask": masks, "id": t["id"]})
    spec = PipelineSpec(batch_size=6, precision="fp32", bootstrap=40, seed=1, skip_bad_rows=True)
    from cluster.evaluation.segment import segment_task
    from cluster.models.resolve import resolve_model
    from cluster.specs.workloads import DataSpec

    data = DataSpec(path=str(root / "test.parquet"), id_column="id")
    task = segment_task(spec, resolve_model(str(path)), CLASSES, data)
    assert task.preprocessing.image_size == 32 and task.columns == {
        "image": "image",
        "mask": "mask",
        "id": "id",
    }
    return task, block, path, t


def run_model(task, block):
    pre = task.preprocess(block)
    model = task.load("cpu")
    parts = [model.predict(pre.filter(pc.equal(pre[BATCH], b))) for b in sorted(set(pre[BATCH].to_pylist()))]
    out = pa.concat_tables(parts)
    return out.filter(pc.invert(pc.is_valid(out[BAD])))  # the write stage leaves bad rows out


def test_statistics_merge_exactly_and_equal_the_offline_masks(setup):
    from cluster.data.images import Preprocessing
    from cluster.data.masks import MaskRules, decode_pairs
    from cluster.models.modality import load_trained

    task, block, path, t = setup
    pre = task.preprocess(block)
    assert pre[BAD].to_pylist()[5].startswith("mask cannot be decoded") and pre[BAD].null_count == 19
    rows = run_model(task, block)
    assert rows.num_rows == 19
    whole = task.statistics(rows)["segmentation"]
    a, b = rows.slice(0, 7), rows.slice(7)
    merged = task.statistics(b)["segmentation"] + task.statistics(a)["segmentation"]
    np.testing.assert_array_equal(merged.confusion, whole.confusion)
    np.testing.assert_array_equal(merged.boot_confusion, whole.boot_confusion)
    assert [w[1] for w in sorted(merged.worst)] == [w[1] for w in sorted(whole.worst)]
    # the same numbers as the model run offline on the same pairs (at each image's size)
    keep = [i for i in range(20) if i != 5]
    d = decode_pairs(
        [t["image"][i].as_py() for i in keep], [t["mask"][i].as_py() for i in keep],
        Preprocessing(image_size=32), MaskRules(len(CLASSES)),
    )  # fmt: skip
    offline = load_trained(path).predict_masks(d.pixels, d.sizes)
    ref = seg.compute_metrics(d.masks, offline, CLASSES, bootstrap=40, seed=1)
    got = task.finalize({"segmentation": merged})
    for m in seg.SCORES:
        assert got[m] == pytest.approx(ref[m], abs=1e-12)
    assert got["n"] == 19 and got["pixels"] == 19 * 64 * 64 and got["task"] == "segmentation"
    assert len(got["worst_images"]) == seg.WORST
    ious = [w["iou"] for w in got["worst_images"]]
    assert ious == sorted(ious)
    thumb = Image.open(io.BytesIO(base64.b64decode(got["worst_images"][0]["overlay_png"])))
    assert thumb.size == (3 * 32, 32)


def test_predictions_hold_each_images_mask_and_iou(setup):
    task, block, path, t = setup
    rows = run_model(task, block)
    p = task.predictions(rows)
    assert p.column_names[0] == ROW and 5 not in p[ROW].to_pylist()
    assert p["id"].to_pylist()[0] == "test-00000"
    cms = np.stack(
        [
            seg.dense_cells(c, n, len(CLASSES))
            for c, n in zip(p["cm_cells"].to_pylist(), p["cm_counts"].to_pylist(), strict=True)
        ]
    )
    np.testing.assert_allclose(p["iou"].to_numpy(), seg.image_iou(cms))
    mask = np.asarray(Image.open(io.BytesIO(p["pred_mask"][0].as_py())))
    assert mask.shape == (64, 64) and p["width"][0].as_py() == 64
    true = np.asarray(Image.open(io.BytesIO(t["mask"][0].as_py())))
    np.testing.assert_array_equal(seg.image_confusion(true, mask, len(CLASSES)), cms[0])


def test_a_bad_pair_without_skip_is_one_line(setup):
    from cluster.errors import UserError

    task, block, _, _ = setup
    strict = SegmentTask(**{**task.__dict__, "spec": task.spec.model_copy(update={"skip_bad_rows": False})})
    with pytest.raises(UserError, match="^row 5: mask cannot be decoded"):
        strict.preprocess(block)


def test_blocks_of_only_bad_rows_keep_the_column_types(setup):
    task, block, _, _ = setup
    good = task.preprocess(block.slice(0, 2))
    bad = task.preprocess(block.slice(5, 1))
    assert good.schema.equals(bad.schema)
    out_good, out_bad = task.load("cpu").predict(good), task.load("cpu").predict(bad)
    assert out_good.schema.equals(out_bad.schema)


def test_report_shows_per_class_iou_confusion_and_the_worst_images(setup, tmp_path):
    from html.parser import HTMLParser

    from cluster.report.html import write_report

    task, block, _, _ = setup
    rows = run_model(task, block)
    m = task.finalize(task.statistics(rows))
    m.update(
        model={"id": "m-seg"}, dataset={"path": "scenes/test.parquet", "fingerprint": "f" * 16}, bootstrap=40
    )
    html = write_report(m, tmp_path / "report.html").read_text()

    class Images(HTMLParser):
        srcs: list = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    parser = Images()
    parser.feed(html)
    assert len(parser.srcs) == seg.WORST and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert "Segmentation evaluation of m-seg" in html and "Mean IoU" in html and "giraffe" in html
    assert html.count("<svg") == 2 and "Pixels of each true class by predicted class" in html


def test_classification_analyses_are_refused_in_one_line():
    from cluster.errors import UserError
    from cluster.evaluation.segment import refuse_classification_analyses
    from cluster.specs.workloads import DataSpec, EvaluateSpec

    refuse_classification_analyses(EvaluateSpec(data=DataSpec(path="x.parquet")), "m-seg")
    spec = EvaluateSpec(data=DataSpec(path="x.parquet", slice_column="site"), auto_slices=True)
    with pytest.raises(
        UserError, match="^model m-seg is a segmentation model: --slice-column, --auto-slices score"
    ):
        refuse_classification_analyses(spec, "m-seg")
