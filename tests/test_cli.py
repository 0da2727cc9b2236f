"""evalctl as a user runs it: bad input is one line on stderr and exit code 2."""

import pandas as pd
import pytest


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_data_sample_prints_sizes(evalctl, tmp_path):
    proc = evalctl("data", "sample", "--out", tmp_path / "s", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "positive" in proc.stdout
    assert len(pd.read_parquet(tmp_path / "s" / "test.parquet")) > 3000


@pytest.mark.parametrize(
    "setup, args, fragments",
    [
        (None, ["data", "check", "/nonexistent/x.parquet"], ["data path not found"]),
        ("x.txt", ["data", "check", "{d}/x.txt"], ["unsupported file type .txt"]),
        (
            "x.parquet",
            ["data", "check", "{d}/x.parquet", "--text-column", "body"],
            ['text column "body" not found', "columns: text, label"],
        ),
        (None, ["models", "alias", "serving", "nothing"], ['no registered model "nothing"']),
        (None, ["runs", "show", "nope"], ['no run "nope"']),
    ],
)
def test_user_errors_are_one_line_exit_2(evalctl, tmp_path, setup, args, fragments):
    if setup == "x.txt":
        (tmp_path / "x.txt").write_text("hi")
    elif setup == "x.parquet":
        pd.DataFrame({"text": ["a"], "label": ["b"]}).to_parquet(tmp_path / "x.parquet")
    proc = evalctl(*[a.format(d=tmp_path) for a in args])
    assert_user_error(proc, *fragments)


def test_usage_errors_exit_2(evalctl):
    assert evalctl("data", "sample").returncode == 2  # missing --out
    assert evalctl("no-such-command").returncode == 2
