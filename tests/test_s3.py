"""Data and artifacts on a real S3 endpoint (moto, authentication on): evaluation and a sweep reading
Parquet, CSV and JSONL from S3, artifacts and models kept there, and the bad inputs."""

import csv
import uuid

import pandas as pd
import pytest

from cluster.evaluation.run import run_evaluate
from cluster.models.resolve import resolve_model
from cluster.registry.record import Registry
from cluster.specs.search_space import SearchSpace
from cluster.specs.workloads import DataSpec, EvaluateSpec, ResourcesSpec, SchedulerSpec, SweepSpec
from jobs.team import compare_runs
from tests.test_registry_cli import assert_user_error
from tests.test_registry_cli import cli as cli  # noqa: F401  (a fixture)

ARTIFACTS = ("metrics.json", "report.html")  # beside predictions/, the part files


@pytest.fixture
def prefix(s3_server, monkeypatch):
    """A fresh key prefix in the session's bucket; EVALCLUSTER_ARTIFACTS points under it."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", f"s3://{s3_server.bucket}/{name}/team")
    return name


def upload_formats(s3_server, df: pd.DataFrame, tmp_path, prefix: str) -> dict[str, str]:
    """``df`` as Parquet (several row groups), CSV and JSONL objects; their s3:// URIs by format."""
    df.to_parquet(tmp_path / "d.parquet", row_group_size=70)
    df.to_csv(tmp_path / "d.csv", index=False, quoting=csv.QUOTE_ALL)  # texts hold \r and \n
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    return {
        ext: s3_server.upload(tmp_path / f"d.{ext}", f"{prefix}/data/d.{ext}")
        for ext in ("parquet", "csv", "jsonl")
    }


@pytest.mark.ray
def test_evaluate_reads_parquet_csv_and_jsonl_from_s3_and_keeps_artifacts_there(
    ray_cluster, s3_server, prefix, tiny_model_dir, sample_dir, tmp_path, evalcluster_home
):
    df = pd.read_parquet(sample_dir / "test.parquet").head(240)
    uris = upload_formats(s3_server, df, tmp_path, prefix)
    results = {}
    for fmt, uri in uris.items():
        spec = EvaluateSpec(
            model=str(tiny_model_dir),
            data=DataSpec(path=uri),
            bootstrap=50,
            rows_per_shard=64,
            sort_rows=64,
            precision="fp32",
        )
        results[fmt] = run_evaluate(spec)
    reg = Registry()
    for fmt, result in results.items():
        run = reg.get_run(result.run_id)
        assert run["status"] == "finished" and run["dataset_path"] == uris[fmt]
        assert run["artifact_path"] == f"s3://{s3_server.bucket}/{prefix}/team/runs/{result.run_id}"
        base = f"{prefix}/team/runs/{result.run_id}/"
        files = [k[len(base) :] for k in s3_server.keys(base) if not k.endswith("/")]  # no dir markers
        parts = [f for f in files if f.startswith("predictions/") and f.endswith(".parquet")]
        # 4 part files and the artifacts: no _checkpoint left behind.
        assert len(parts) == 4 and sorted(set(files) - set(parts)) == sorted(ARTIFACTS), files
        assert result.metrics["n"] == 240 and result.metrics["dataset"]["path"] == uris[fmt]
    fingerprints = {reg.get_run(r.run_id)["dataset_fingerprint"] for r in results.values()}
    assert len(fingerprints) == 1  # the same rows in three formats
    assert len({r.metrics["accuracy"] for r in results.values()}) == 1
    assert not (evalcluster_home / "staging").exists() or not any((evalcluster_home / "staging").iterdir())
    # compare streams both runs' predictions from the object store
    cmp = compare_runs(reg, results["parquet"].run_id, results["jsonl"].run_id, replicates=50)
    assert cmp["n"] == 240 and cmp["mcnemar"]["a_right_b_wrong"] == cmp["mcnemar"]["a_wrong_b_right"] == 0


@pytest.mark.ray
def test_sweep_reads_csv_and_jsonl_splits_from_s3_and_stores_the_model_with_its_checksum(
    ray_cluster, s3_server, prefix, tiny_model_dir, sample_dir, tmp_path, evalcluster_home
):
    from jobs.sweep import run_sweep

    train = pd.read_parquet(sample_dir / "train.parquet").head(120)
    val = pd.read_parquet(sample_dir / "validation.parquet").head(60)
    train.to_csv(tmp_path / "train.csv", index=False, quoting=csv.QUOTE_ALL)
    val.to_json(tmp_path / "val.jsonl", orient="records", lines=True)
    spec = SweepSpec(
        name="s3-sweep",
        model=str(tiny_model_dir),
        train=DataSpec(path=s3_server.upload(tmp_path / "train.csv", f"{prefix}/data/train.csv")),
        validation=DataSpec(path=s3_server.upload(tmp_path / "val.jsonl", f"{prefix}/data/val.jsonl")),
        search=SearchSpace(learning_rate=1e-3, batch_size=16, epochs=1, max_length=16),
        scheduler=SchedulerSpec(kind="none"),
        num_samples=1,
        resources=ResourcesSpec(cpus=1),
        evals_per_epoch=1,
        precision="fp32",
    )
    summary = run_sweep(spec)
    reg = Registry()
    row = reg.resolve_model("best")
    location = f"s3://{s3_server.bucket}/{prefix}/team/models/{summary['model_id']}"
    assert row["id"] == summary["model_id"] and row["path"] == location
    assert row["checksum"].startswith("sha256:") and "config.json" in " ".join(
        s3_server.keys(f"{prefix}/team/models/")
    )
    ref = resolve_model("best", reg)  # downloaded into this node's cache, verified
    assert ref.path == evalcluster_home / "cache" / "models" / row["id"] and ref.checksum == row["checksum"]
    assert ref.labels == ["negative", "neutral", "positive"] and ref.location == location
    assert not (evalcluster_home / "models").exists()  # nothing kept beside the store


# ------------------------------------------------------------------ bad input: one line, exit 2


@pytest.mark.cli
def test_a_bucket_that_does_not_exist(cli, s3_server, tiny_model_dir, sample_dir, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://no-such-bucket/team")
    proc = cli("evaluate", "--model", tiny_model_dir, "--data", sample_dir / "test.parquet", "--limit", "20")
    assert_user_error(proc, "cannot write artifacts (EVALCLUSTER_ARTIFACTS) to s3://no-such-bucket/team",
                      "bucket no-such-bucket does not exist", secret=s3_server.secret_key)  # fmt: skip
    proc = cli("data", "check", "s3://no-such-bucket/x.parquet")
    assert_user_error(
        proc, "data path not found: s3://no-such-bucket/x.parquet (bucket no-such-bucket does not exist)"
    )
    assert Registry().list_runs() == []


@pytest.mark.cli
def test_missing_credentials(cli, s3_server, prefix, sample_dir, tiny_model_dir, tmp_path, monkeypatch):
    uri = s3_server.upload(sample_dir / "test.parquet", f"{prefix}/data/test.parquet")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials either
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    proc = cli("evaluate", "--model", tiny_model_dir, "--data", uri)
    # Whichever S3 location evaluate checks first (the data, or the artifact store it writes to),
    # the user gets one line naming it and the variables to set.
    assert_user_error(
        proc,
        f"s3://{s3_server.bucket}/{prefix}/",
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
    assert Registry().list_runs() == []


@pytest.mark.cli
def test_a_model_whose_files_no_longer_match_its_checksum(
    cli,
    s3_server,
    prefix,
    tiny_model_dir,
    sample_dir,
    evalcluster_home,
):
    proc = cli("models", "register", tiny_model_dir, "--alias", "best")
    assert proc.returncode == 0, proc.stderr
    (model,) = Registry().list_models()
    assert (
        model["path"].startswith(f"s3://{s3_server.bucket}/{prefix}/team/models/m-")
        and model["aliases"] == "best"
    )
    key = model["path"].split(f"{s3_server.bucket}/", 1)[1] + "/model.safetensors"
    s3_server.write(key, s3_server.read(key)[:-10] + b"x" * 10)  # same size, other bytes
    for ref in ("best", model["id"], model["path"]):
        proc = cli("evaluate", "--model", ref, "--data", sample_dir / "test.parquet", "--limit", "20")
        assert_user_error(
            proc,
            f"model {model['id']} at {model['path']} does not match the checksum recorded at registration",
        )
    assert Registry().list_runs() == []
    cached = evalcluster_home / "cache" / "models"
    assert not [p for p in cached.iterdir() if not p.name.endswith(".lock")]  # nothing half-written kept
