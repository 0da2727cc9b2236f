"""Sharded evaluation of an image model: the same pipeline, outputs and metrics as for text."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cluster.errors import UserError
from cluster.evaluation.run import run_evaluate
from cluster.models.modality import load_trained
from cluster.models.vision import prepare_for_inference
from cluster.registry.predictions import read_predictions
from cluster.specs.workloads import DataSpec, EvaluateSpec

LABELS = ["zero", "one", "two"]


def image_spec(path, out, **kw) -> EvaluateSpec:
    data = DataSpec(path=str(path), image_column="picture", label_column="digit", id_column="pid")
    return EvaluateSpec(
        model=kw.pop("model"), data=data, out=str(out), bootstrap=50, rows_per_shard=40, sort_rows=40, **kw
    )


@pytest.mark.ray
def test_image_evaluation_equals_sklearn_and_keeps_row_ids(
    ray_cluster, tiny_image_model_dir, digits_images, tmp_path
):
    result = run_evaluate(image_spec(digits_images, tmp_path / "out", model=str(tiny_image_model_dir)))
    preds = read_predictions(tmp_path / "out" / "predictions")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    source = pq.read_table(digits_images).to_pandas()
    assert preds["row"].tolist() == list(range(150))
    assert preds["pid"].tolist() == source["pid"].tolist()
    # The same probabilities as a plain single-process forward pass at the same precision, of
    # the model as the actors run it (BatchNorm folded: cluster.models.vision.prepare_for_inference).
    clf = load_trained(tiny_image_model_dir)
    prepare_for_inference(clf.model, precision=metrics["precision_mode"])
    ref = clf.predict_proba(
        clf.prepare(source["picture"].tolist()).inputs, precision=metrics["precision_mode"]
    )
    got = np.stack(preds["probs"].to_numpy())
    np.testing.assert_allclose(got, ref, atol=1e-6)
    y, pred = source["digit"].map(LABELS.index).to_numpy(), got.argmax(1)
    expected = {
        "accuracy": accuracy_score(y, pred),
        "f1_macro": f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0),
        "precision_weighted": precision_score(y, pred, average="weighted", labels=[0, 1, 2], zero_division=0),
        "recall_macro": recall_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0),
        "log_loss": log_loss(y, got, labels=[0, 1, 2]),
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    assert metrics["dataset"]["modality"] == "image" and metrics["dataset"]["image_column"] == "picture"
    assert metrics["bad_rows"]["count"] == 0 and result.metrics["n"] == 150
    # The evaluation's analyses on images: threshold metrics as for text; the most confident
    # mistakes by row, without token attributions (there are no tokens).
    auc = roc_auc_score(y, got, multi_class="ovr", average="macro", labels=[0, 1, 2])
    assert metrics["roc_auc_macro"] == pytest.approx(auc, abs=1e-9)
    examples = [e for pair in metrics["mistakes"] for e in pair["examples"]]
    assert examples and all(e["text"] is None and "tokens" not in e for e in examples)
    assert all(source["digit"].iloc[e["row"]] == e["label"] != e["pred"] for e in examples)
    from tests.browser import assert_renders

    assert_renders(tmp_path / "out" / "report.html", min_figures=3)


@pytest.fixture(scope="module")
def with_bad_rows(digits_images, tmp_path_factory):
    """The digits with row 7 undecodable and row 23 an empty image."""
    return _with_pictures(
        digits_images, tmp_path_factory, {7: b"not an image at all", 23: b"\x89PNG\r\n\x1a\n"}
    )


@pytest.fixture(scope="module")
def with_bad_and_empty_rows(digits_images, tmp_path_factory):
    """Those, and row 31 an image file of 0 bytes (issue 28, point 5: it stopped --skip-bad-rows)."""
    bad = {7: b"not an image at all", 23: b"\x89PNG\r\n\x1a\n", 31: b""}
    return _with_pictures(digits_images, tmp_path_factory, bad)


def _with_pictures(digits_images, tmp_path_factory, pictures_at: dict):
    table = pq.read_table(digits_images).slice(0, 60)
    pictures = table["picture"].to_pylist()
    for row, picture in pictures_at.items():
        pictures[row] = picture
    table = table.set_column(0, "picture", pa.array(pictures, pa.binary()))
    path = tmp_path_factory.mktemp("bad") / "bad.parquet"
    pq.write_table(table, path, row_group_size=40)
    return path


@pytest.mark.ray
def test_a_bad_image_is_one_line_naming_its_row(ray_cluster, tiny_image_model_dir, with_bad_rows, tmp_path):
    with pytest.raises(UserError, match=r"image at row 7 cannot be decoded.*--skip-bad-rows") as exc:
        run_evaluate(image_spec(with_bad_rows, tmp_path / "out", model=str(tiny_image_model_dir)))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.cli
def test_cli_skip_bad_rows_counts_and_reports_them(
    evalctl, tiny_image_model_dir, with_bad_and_empty_rows, tmp_path
):
    args = ["--model", tiny_image_model_dir, "--data", with_bad_and_empty_rows, "--image-column", "picture"]
    args += ["--label-column", "digit", "--id-column", "pid", "--out", tmp_path / "out", "--bootstrap", "20"]
    proc = evalctl("evaluate", *args, "--skip-bad-rows")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 3 bad image row(s): rows 7, 23, 31" in proc.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n"] == 57 and metrics["bad_rows"]["count"] == 3
    assert [b["row"] for b in metrics["bad_rows"]["first_rows"]] == [7, 23, 31]
    # Rows read, the skipped ones included (docs/contracts.md: workers, recovery).
    assert metrics["recovery"]["rows"] == sum(w["rows"] for w in metrics["workers"]) == 60
    preds = read_predictions(tmp_path / "out" / "predictions")
    assert preds["row"].tolist() == [r for r in range(60) if r not in (7, 23, 31)]
    # Without --skip-bad-rows: exit 2 and one line naming the row, no traceback (the 0-byte image is
    # found before any model loads).
    proc = evalctl("evaluate", *args, "--out", tmp_path / "out2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert 'null or empty "picture" (first rows: 31)' in proc.stderr and "--skip-bad-rows" in proc.stderr


@pytest.mark.cli
def test_text_analyses_asked_of_an_image_model_are_one_line(evalctl, tiny_image_model_dir, digits_images):
    """--auto-slices, robustness (text perturbations) and drift read text: refused before anything
    starts, exit 2, one line, no traceback."""
    data = ["--data", digits_images, "--image-column", "picture", "--label-column", "digit"]
    runs = {
        "--auto-slices": ("evaluate", "--model", tiny_image_model_dir, *data, "--auto-slices"),
        "robustness perturbs text": ("robustness", "--model", tiny_image_model_dir, *data),
        "drift checks compare texts": (
            *("drift", "--reference", digits_images, "--current", digits_images),
            *("--model", tiny_image_model_dir),
        ),
    }
    for says, args in runs.items():
        proc = evalctl(*args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert says in proc.stderr and "image classifier" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_text_model_on_image_data_and_back_name_the_missing_column(tiny_model_dir, digits_images):
    from cluster.data.scan import scan

    with pytest.raises(UserError, match='image column "image" not found'):
        scan(DataSpec(path=str(digits_images), label_column="digit"), modality="image")
    summary = scan(
        DataSpec(path=str(digits_images), image_column="picture", label_column="digit"), modality="image"
    )
    assert summary.num_rows == 150 and set(summary.label_counts) == set(LABELS)


def test_leaderboard_and_data_check_see_image_data_as_an_evaluation_does(digits_images, tmp_path):
    """Without a model to say, a file with the image column and no text column is image data, so
    `leaderboard --data` and `data check` find the fingerprint its evaluations recorded."""
    from cluster.data.scan import data_modality, scan, scan_any

    spec = DataSpec(path=str(digits_images), image_column="picture", label_column="digit")
    assert data_modality(spec) == "image"
    assert scan_any(spec).fingerprint == scan(spec, modality="image").fingerprint
    text = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["a", "b"], "image": [b"x", b"y"], "label": ["p", "q"]}).to_parquet(text)
    assert data_modality(DataSpec(path=str(text))) == "text"  # a text column: text, as before


def test_a_label_folder_tree_becomes_an_image_dataset(tmp_path):
    from cluster.data.image_data import encode_png
    from cluster.data.scan import image_folder_spec, read_pandas, scan

    for label in ("cat", "dog"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "tree" / label / f"{i}.png").write_bytes(
                encode_png(np.full((4, 4), i * 80, np.uint8))
            )
    spec = image_folder_spec(DataSpec(path=str(tmp_path / "tree")), "image", tmp_path / "work")
    assert scan(spec, modality="image").label_counts == {"cat": 3, "dog": 3}
    df = read_pandas(spec, modality="image")
    assert df["image"].iloc[4] == str(tmp_path / "tree" / "dog" / "1.png")
    text_spec = DataSpec(path=str(tmp_path / "tree"))
    assert image_folder_spec(text_spec, "text", tmp_path / "work") is text_spec


def test_the_stages_skip_bad_images_even_a_whole_block_of_them(tiny_image_model_dir, digits_images):
    """The pipeline's stages called in-process (cluster/evaluation/task.py): a skipped row flows on
    with ``_bad`` set, leaves the statistics and the predictions, and is listed in its part file's
    footer with the rows it covers; a block with nothing left still writes its footer."""
    from cluster.evaluation.parts import decode_part
    from cluster.evaluation.sink import score_rows
    from cluster.evaluation.tasks import classification
    from cluster.models.resolve import resolve_model

    table = pq.read_table(digits_images).slice(0, 6)
    block = pa.table(
        {"row": pa.array(range(10, 16), pa.int64()), "image": table["picture"], "label": table["digit"]}
    )
    spec = image_spec(digits_images, "unused", model=str(tiny_image_model_dir), skip_bad_rows=True)
    task = classification(spec, resolve_model(str(tiny_image_model_dir)), LABELS, spec.data)
    model = task.load("cpu")

    def run(images: list) -> tuple:
        pre = task.preprocess(block.set_column(1, "image", pa.array(images, pa.binary())))
        rows, metadata = score_rows(task, model.predict(pre))
        return rows, decode_part(metadata, "test")

    rows, part = run([b"x", *table["picture"].to_pylist()[1:]])
    assert rows["row"].to_pylist() == [11, 12, 13, 14, 15] and part.stats["core"].n == 5
    assert part.bad.count == 1 and part.bad.first == [(10, part.bad.first[0][1])]
    assert part.coverage.rows == 6  # the rows read, the skipped one included
    rows, part = run([b"x"] * 6)
    assert rows.num_rows == 0 and part.stats == {} and part.bad.count == 6 and part.coverage.rows == 6
    # Without skip_bad_rows the first bad image is a UserError naming its row (the pipeline raises a
    # stage's UserError as itself: cluster/evaluation/pipeline.py).
    strict = classification(
        spec.model_copy(update={"skip_bad_rows": False}),
        resolve_model(str(tiny_image_model_dir)),
        LABELS,
        spec.data,
    )
    with pytest.raises(UserError, match="image at row 10 cannot be decoded"):
        strict.preprocess(block.set_column(1, "image", pa.array([b"x"] * 6, pa.binary())))
