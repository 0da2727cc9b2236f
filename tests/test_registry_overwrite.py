"""A run whose --out directory a later run overwrote (issue 28, point 12).

After `evaluate --out DIR --overwrite`, the first run's finished record still pointed at DIR and
`evalctl report OLD_RUN` showed the new run's report. Now the overwrite is recorded (table
``overwrites``, schema revision 0005: a finished run's row is immutable) and said wherever the
old run's outputs are asked for.
"""

import json

import numpy as np
import pytest

from cluster.errors import UserError
from cluster.registry.overwrites import mark_overwritten, overwritten
from cluster.registry.record import Registry
from cluster.specs.workloads import GateSpec
from jobs.gate import gate_run
from tests.registry_helpers import fake_eval


def two_runs_in_one_dir(tmp_path):
    reg = Registry()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    old, _ = fake_eval(reg, tmp_path, "out", "fp1", y, y)
    other, _ = fake_eval(reg, tmp_path, "other", "fp1", y, (y + 1) % 3)
    new = reg.start_run("evaluate", {}, dataset_fingerprint="fp1")
    return reg, old, other, new, str(tmp_path / "out")


def test_an_overwrite_is_recorded_and_said_where_the_outputs_are_asked_for(tmp_path, backend, evalctl):
    reg, old, other, new, out = two_runs_in_one_dir(tmp_path)
    assert mark_overwritten(reg, out, new) == [old]
    assert mark_overwritten(reg, out, new) == []  # once
    gone = overwritten(reg, old)
    assert gone["by_run"] == new and gone["path"] == out and overwritten(reg, other) is None
    assert reg.get_run(old)["status"] == "finished"  # its own record is untouched (immutable)
    says = f"run {old}'s outputs in {out} were overwritten by run {new} at"
    report = evalctl("report", old)
    assert report.returncode == 2 and says in report.stderr and "its report is gone" in report.stderr
    assert len(report.stderr.strip().splitlines()) == 1
    compare = evalctl("compare", old, other)
    assert compare.returncode == 2 and says in compare.stderr, compare.stderr
    show = evalctl("runs", "show", old)
    assert show.returncode == 0 and f"overwritten by run {new}" in " ".join(show.stdout.split())
    shown = json.loads(show.stdout[: show.stdout.rindex("}") + 1])
    assert shown["overwritten"]["by_run"] == new
    with pytest.raises(UserError, match="its metrics is gone"):
        gate_run(reg, old, GateSpec(min={"f1_macro": 0.5}))
    (tmp_path / "other" / "report.html").write_text("<html></html>")
    assert evalctl("report", other).returncode == 0  # another run's outputs are untouched


@pytest.mark.ray
def test_evaluate_with_overwrite_marks_the_earlier_run(evalctl, tiny_model_dir, sample_dir, tmp_path):
    out = tmp_path / "out"
    args = ("evaluate", "--model", tiny_model_dir, "--data", sample_dir / "test.parquet", "--out", out)
    args += ("--limit", "40", "--bootstrap", "0", "--no-threshold", "--mistakes", "0")
    first = evalctl(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (old,) = [r["id"] for r in Registry().list_runs()]
    second = evalctl(*args, "--overwrite")
    assert second.returncode == 0, second.stderr[-2000:]
    new = json.loads((out / "metrics.json").read_text())["run_id"]
    report = evalctl("report", old)  # was: exit 0, the path of the new run's report
    assert report.returncode == 2 and f"overwritten by run {new}" in report.stderr, report.stderr
    assert evalctl("report", new).stdout.strip() == str(out.resolve() / "report.html")
