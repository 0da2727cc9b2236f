"""Specs: YAML and options validated by pydantic; every error is one line naming the place and the key."""

import pytest

from cluster.errors import UserError
from cluster.specs.parse import load_spec, load_spec_file, load_yaml, merge, path_fields, replace_paths
from cluster.specs.pretrain import PretrainSpec
from cluster.specs.serve import ServeSpec
from cluster.specs.workloads import DataSpec, EvaluateSpec, SweepSpec


def test_nested_yaml_maps_onto_specs(tmp_path):
    f = tmp_path / "eval.yaml"
    f.write_text("model: best\ndata:\n  path: x.parquet\n  text_column: tweet\nbatch_size: 32\n")
    spec = load_spec_file(EvaluateSpec, f)
    assert spec.data == DataSpec(path="x.parquet", text_column="tweet")
    assert spec.batch_size == 32 and spec.precision == "auto"


def test_unknown_key_names_file_key_suggestion_and_allowed(tmp_path):
    f = tmp_path / "eval.yaml"
    f.write_text("data:\n  path: x\n  text_colum: tweet\n")
    with pytest.raises(
        UserError,
        match=r'^eval.yaml: data.text_colum: unknown key \(did you mean "text_column"\?\); allowed: path, text_column',
    ):
        load_spec_file(EvaluateSpec, f)


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("batch_size: lots\n", r"batch_size: must be an integer, got a string 'lots'"),
        ("batch_size: true\n", r"batch_size: must be an integer, got a boolean True"),
        (
            "precision: bf17\n",
            r"precision: must be one of auto, fp32, bf16, fp16, got 'bf17' \(did you mean \"bf16\"",
        ),
        ("data: [1, 2]\n", r"data: must be a mapping, got a list"),
        ("workers: 1.5\n", r"workers: must be an integer, got a number 1.5"),
        ("batch_size: 0\n", r"batch_size: must be >= 1, got 0"),
        ("bootstrap: -1\n", r"bootstrap: must be >= 0, got -1"),
        ("data: {path: x, label_column: null}\n", r"evaluation needs a label column"),
    ],
)
def test_wrong_values_name_the_file_and_key(tmp_path, yaml_text, match):
    f = tmp_path / "eval.yaml"
    f.write_text(("data: {path: x}\n" if "data:" not in yaml_text else "") + yaml_text)
    with pytest.raises(UserError, match=match) as err:
        load_spec_file(EvaluateSpec, f)
    assert str(err.value).startswith("eval.yaml") and "\n" not in str(err.value)


def test_options_are_named_by_their_flag():
    with pytest.raises(UserError, match=r"^--batch-size: must be >= 1, got 0$"):
        load_spec(
            EvaluateSpec, {"data": {"path": "x"}, "batch_size": 0}, flags={("batch_size",): "--batch-size"}
        )


def test_missing_empty_and_invalid_yaml_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(UserError, match="empty.yaml: the file is empty"):
        load_yaml(empty)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_yaml(listed)


def test_merge_sets_only_the_given_keys():
    base = {"data": {"path": "a", "text_column": "t"}, "limit": 5}
    out = merge(base, {("data", "path"): "b", ("out",): "o"})
    assert out == {"data": {"path": "b", "text_column": "t"}, "limit": 5, "out": "o"}
    assert base["data"]["path"] == "a"  # the input is not changed


def test_path_fields_are_found_by_their_marker_not_by_value():
    spec = SweepSpec(name="data", storage_path="runs/s")
    keys = {key: marker.kind for key, marker, _ in path_fields(spec)}
    assert keys == {
        ("model",): "model",
        ("train", "path"): "input",
        ("validation", "path"): "input",
        ("storage_path",): "output",
    }
    moved = replace_paths(spec, lambda key, marker, value: f"/abs/{value}")
    assert moved.train.path == "/abs/data/sample/train.parquet" and moved.name == "data"


def test_defaults_and_serialisation_round_trip():
    for spec in (SweepSpec(), PretrainSpec(), ServeSpec(autoscale="1:4")):
        again = type(spec).model_validate_json(spec.model_dump_json())
        assert again == spec
    assert PretrainSpec().data.label_column is None  # unlabelled text
    assert ServeSpec(autoscale="1:4").autoscale == [1, 4]


def test_every_spec_validates_its_own_dump():
    """What the registry records and a job receives (model_dump) validates again, defaults included."""
    for spec in (
        EvaluateSpec(data=DataSpec(path="x")),
        SweepSpec(),
        PretrainSpec(),
        ServeSpec(),
        ServeSpec(autoscale="2:3"),
    ):
        assert load_spec(type(spec), spec.model_dump()) == spec
        assert load_spec(type(spec), spec.model_dump(mode="json")) == spec
