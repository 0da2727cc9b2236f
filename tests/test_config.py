"""YAML specs: unknown keys and wrong types fail at once, naming the key."""

from dataclasses import dataclass, field

import pytest

from cluster.config import DataSpec, EvaluateSpec, from_dict, load_yaml
from cluster.errors import UserError


def test_nested_yaml_maps_onto_dataclasses(tmp_path):
    f = tmp_path / "eval.yaml"
    f.write_text("model: best\ndata:\n  path: x.parquet\n  text_column: tweet\nbatch_size: 32\n")
    spec = load_yaml(f, EvaluateSpec)
    assert spec.data == DataSpec(path="x.parquet", text_column="tweet")
    assert spec.batch_size == 32 and spec.precision == "auto"


def test_unknown_key_names_key_and_suggests(tmp_path):
    f = tmp_path / "eval.yaml"
    f.write_text("data:\n  path: x\n  text_colum: tweet\n")
    with pytest.raises(UserError, match=r'unknown key "data.text_colum" \(did you mean "text_column"\?\)'):
        load_yaml(f, EvaluateSpec)


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("batch_size: lots\n", r'"batch_size" must be an integer, got a string'),
        ("batch_size: true\n", r'"batch_size" must be an integer, got a boolean'),
        (
            "precision: bf17\n",
            r'"precision" must be one of auto, fp32, bf16, fp16, got .bf17. \(did you mean "bf16"',
        ),
        ("data: [1, 2]\n", r'"data" must be a mapping, got a list'),
        ("workers: 1.5\n", r'"workers" must be an integer, got a number 1.5'),
    ],
)
def test_wrong_types_name_the_key(tmp_path, yaml_text, match):
    f = tmp_path / "eval.yaml"
    f.write_text(yaml_text)
    with pytest.raises(UserError, match=match):
        load_yaml(f, EvaluateSpec)


def test_int_accepted_for_float_and_lists_checked():
    @dataclass
    class S:
        lr: float = 1e-3
        sizes: list[int] = field(default_factory=list)

    assert from_dict(S, {"lr": 1, "sizes": [1, 2]}) == S(1.0, [1, 2])
    with pytest.raises(UserError, match=r'"sizes\[1\]" must be an integer'):
        from_dict(S, {"sizes": [1, "x"]})


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml", EvaluateSpec)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad, EvaluateSpec)
