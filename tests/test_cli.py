"""evalctl as a user runs it: bad input is one line on stderr and exit code 2."""

import pandas as pd
import pytest

pytestmark = pytest.mark.cli


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


def test_debug_shows_the_traceback_with_its_cause(evalctl, tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text("num_samples: 0\n")
    quiet = evalctl("sweep", "--config", f)
    assert_user_error(quiet, "sweep.yaml: num_samples: must be >= 1, got 0")
    for args, env in ((["--debug"], None), ([], {"EVALCLUSTER_DEBUG": "1"})):
        loud = evalctl(*args, "sweep", "--config", f, env=env)
        assert loud.returncode == 2
        assert "Traceback" in loud.stderr and "ValidationError" in loud.stderr  # the cause is kept
        assert "direct cause of the following exception" in loud.stderr
        assert loud.stderr.strip().splitlines()[-1].startswith("error: sweep.yaml: num_samples")


def test_log_level_is_checked_and_info_logs_show(evalctl, tmp_path):
    assert_user_error(
        evalctl("--log-level", "LOUD", "data", "sample", "--out", tmp_path), "log level must be one of"
    )
    pd.DataFrame({"text": ["a"], "label": ["b"]}).to_parquet(tmp_path / "x.parquet")
    quiet = evalctl("leaderboard", "--data", tmp_path / "x.parquet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = evalctl("--log-level", "INFO", "leaderboard", "--data", tmp_path / "x.parquet")
    assert loud.returncode == 0 and "INFO cluster." in loud.stderr, loud.stderr
