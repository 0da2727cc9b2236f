"""`evalctl drift` end to end on the corpus's domains, `evalctl data sample --by-domain`, bad input."""

import json

import pandas as pd
import pytest

from cluster.registry.record import Registry
from cluster.specs.workloads import DataSpec, DriftSpec
from jobs.drift import run_drift
from tests.browser import assert_renders


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """The sample splits cut by domain (the same rows as `evalctl data sample`)."""
    from cluster.data.domains import sample_splits_by_domain

    out = tmp_path_factory.mktemp("domains")
    counts = sample_splits_by_domain(out, seed=0)
    return out, counts


@pytest.mark.heavy  # reads and splits the real corpus
def test_by_domain_splits_are_the_sample_splits_cut(domains, sample_dir):
    out, counts = domains
    for split in ("train", "validation", "test"):
        parts = [pd.read_parquet(out / d / f"{split}.parquet") for d in counts]
        whole = pd.read_parquet(sample_dir / f"{split}.parquet")
        assert sorted(pd.concat(parts)["text"]) == sorted(whole["text"])
    assert sum(counts["airline"]["test"].values()) == len(pd.read_parquet(out / "airline" / "test.parquet"))


def spec_for(reference, current, out, model=None, **kw):
    return DriftSpec(
        reference=DataSpec(path=str(reference)),
        current=DataSpec(path=str(current)),
        model=None if model is None else str(model),
        out=str(out),
        embed_rows=300,
        bootstrap=200,
        precision="fp32",
        **kw,
    )


@pytest.mark.ray
def test_airline_against_driverless_drifts(ray_cluster, domains, tiny_model_dir, tmp_path):
    out, _ = domains
    res = run_drift(spec_for(out / "airline" / "test.parquet", out / "driverless" / "test.parquet", tmp_path / "d",
                             tiny_model_dir))  # fmt: skip
    checks = res["report"]["checks"]
    assert res["report"]["verdict"] == "drift" and checks["domain"]["verdict"] == "drift"
    assert checks["domain"]["statistic"] > 0.8, checks["domain"]
    assert set(checks) == {"predictions", "confidence", "length", "unknown_tokens", "domain"}
    assert res["metric_gap"]["accuracy"]["ci95"][0] <= res["metric_gap"]["accuracy"]["gap"]
    written = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert written["report"]["verdict"] == "drift" and written["current"]["labelled"] is True
    run = Registry().get_run(res["run_id"])
    assert run["kind"] == "drift" and run["dataset_fingerprint"] == res["current"]["fingerprint"]
    assert run["metrics"]["checks"]["domain"]["verdict"] == "drift"
    found = assert_renders(tmp_path / "d" / "report.html", min_figures=3)
    assert "Bonferroni" in found["text"] and "Metric gap" in found["text"]


@pytest.mark.ray
def test_a_dataset_against_its_shuffled_copy_does_not_drift(ray_cluster, domains, tmp_path):
    out, _ = domains
    df = pd.read_parquet(out / "airline" / "test.parquet")
    df.sample(frac=1.0, random_state=1).to_parquet(tmp_path / "shuffled.parquet")
    unlabelled = df[["text"]].sample(frac=1.0, random_state=2)
    unlabelled.to_parquet(tmp_path / "unlabelled.parquet")
    # No --model: text checks and the base encoder's embeddings.
    res = run_drift(spec_for(out / "airline" / "test.parquet", tmp_path / "shuffled.parquet", tmp_path / "s"))
    domain = res["report"]["checks"]["domain"]
    assert res["report"]["verdict"] == "no drift", res["report"]
    assert 0.4 <= domain["statistic"] <= 0.6 and domain["p_value"] > 0.05, domain
    assert set(res["report"]["checks"]) == {"length", "unknown_tokens", "domain"}
    assert "predictions, confidence" in res["skipped"] and res["metric_gap"] is None
    assert res["report"]["checks"]["length"]["p_value"] == 1.0
    assert res["model"].startswith("none")


@pytest.mark.cli
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--reference", "/nope/a.parquet"], "data path not found"),
        (["--model", "nosuchmodel"], 'MODEL "nosuchmodel" resolves to nothing'),
        (["--current", "TINY"], "has 5 rows; drift checks need at least 10"),
        (["--alpha", "2"], "--alpha: must be < 1, got 2.0"),
        (["--current-text-column", "body"], 'text column "body" not found'),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(evalctl, domains, tmp_path, args, fragment):
    out, _ = domains
    pd.read_parquet(out / "claritin" / "test.parquet").head(5).to_parquet(tmp_path / "tiny.parquet")
    base = {
        "--reference": str(out / "airline" / "test.parquet"),
        "--current": str(out / "apple" / "test.parquet"),
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    base = {k: str(tmp_path / "tiny.parquet") if v == "TINY" else v for k, v in base.items()}
    proc = evalctl("drift", *[x for kv in base.items() for x in kv])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert Registry().list_runs() == []
