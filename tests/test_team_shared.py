"""Two "machines" (different HOME and EVALCLUSTER_HOME) sharing one PostgreSQL registry and one S3
artifact store; and nothing they print or write holds the database password or the S3 secret key."""

import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from cluster.registry.record import Registry
from cluster.specs.serve import ServeSpec
from tests.conftest import free_port, run_evalctl

pytestmark = pytest.mark.ray
WIDE = {"COLUMNS": "250"}


class Machine:
    """A user's machine: its own HOME, EVALCLUSTER_HOME and Ray temp dir; the team's DB and store."""

    def __init__(self, root: Path, shared: dict, outputs: list):
        self.home = root / "home"
        self.evalcluster_home = self.home / ".evalcluster"
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ecr-", dir="/tmp"))  # short: Ray's socket paths
        self.env = {
            **shared,
            "HOME": str(self.home),
            "EVALCLUSTER_HOME": str(self.evalcluster_home),
            "RAY_TMPDIR": str(self.ray_tmp),
        }
        self.outputs = outputs

    def evalctl(self, *args, ok: bool = True):
        proc = run_evalctl(*args, env=self.env)
        self.outputs.append(proc)
        if ok:
            assert proc.returncode == 0, (args, proc.stderr[-3000:])
        return proc


def test_two_machines_share_runs_models_aliases_and_artifacts(
    ray_cluster, s3_server, pg_server, pg_url, tiny_model_dir, sample_dir, tmp_path, monkeypatch
):
    prefix = f"t-team-{uuid.uuid4().hex[:8]}"
    (tmp_path / "data").mkdir()
    pd.read_parquet(sample_dir / "test.parquet").head(96).to_parquet(tmp_path / "data" / "test.parquet")
    data = s3_server.upload(tmp_path / "data" / "test.parquet", f"{prefix}/data/test.parquet")
    shared = {
        "EVALCLUSTER_DB": pg_url,
        "EVALCLUSTER_ARTIFACTS": f"s3://{s3_server.bucket}/{prefix}/team",
        **WIDE,
    }
    outputs: list = []
    a, b = Machine(tmp_path / "a", shared, outputs), Machine(tmp_path / "b", shared, outputs)
    try:
        evaluate = ["evaluate", "--model", "best", "--data", data, "--bootstrap", "50", "--max-length", "16"]
        a.evalctl("models", "register", tiny_model_dir, "--alias", "best")
        run_a = a.evalctl("--log-level", "INFO", *evaluate).stdout.split("run ")[-1].split(";")[0].strip()
        assert run_a in b.evalctl("runs", "list").stdout
        assert run_a in b.evalctl("leaderboard").stdout
        report = Path(b.evalctl("report", run_a).stdout.strip())
        assert report.is_relative_to(b.evalcluster_home) and report.read_text().startswith("<!doctype html>")
        run_b = b.evalctl(*evaluate).stdout.split("run ")[-1].split(";")[0].strip()
        verdict = b.evalctl("compare", run_a, run_b, "--bootstrap", "50").stdout
        assert "no significant difference on f1_macro" in verdict  # the same model on the same data
        b.evalctl("models", "alias", "serving", "best")
        assert "serving" in a.evalctl("models", "list").stdout
        model = _deploy_as(b, monkeypatch)
        assert (b.evalcluster_home / "cache" / "models" / model["id"]).is_dir()  # B downloaded it once
        assert not (a.evalcluster_home / "runs").exists()  # runs live in the store, not on A's disk
        _nothing_holds_a_secret(outputs, tmp_path, (a, b), s3_server, prefix, pg_url, pg_server.password)
    finally:
        for m in (a, b):
            shutil.rmtree(m.ray_tmp, ignore_errors=True)


def _deploy_as(machine: Machine, monkeypatch) -> dict:
    """`serve deploy --model serving` from ``machine``, on the test's shared Ray cluster."""
    from ray import serve

    from jobs.deploy import deploy

    for key in ("EVALCLUSTER_DB", "EVALCLUSTER_ARTIFACTS", "EVALCLUSTER_HOME"):
        monkeypatch.setenv(key, machine.env[key])
    model = Registry().resolve_model("serving")
    port = free_port()
    spec = ServeSpec(model="serving", port=port, precision="fp32", cpus_per_replica=0.5)
    try:
        served = deploy(spec, start_head=False, timeout_s=240)
        assert served["model_id"] == model["id"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"texts": ["great flight"]}, timeout=60)
        assert r.status_code == 200 and r.json()["model"]["id"] == model["id"]
    finally:
        serve.shutdown()
    return model


def _nothing_holds_a_secret(outputs, tmp_path, machines, s3_server, prefix, pg_url, password):
    secrets = [password, s3_server.secret_key]
    for proc in outputs:
        for secret in secrets:
            assert secret not in proc.stdout + proc.stderr
    roots = [tmp_path, *(m.ray_tmp for m in machines)]  # homes, caches, reports, Ray's session logs
    files = [p for root in roots for p in Path(root).rglob("*") if p.is_file()]
    assert any("session_" in str(p) and p.suffix in (".log", ".out", ".err") for p in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, path
    for key in s3_server.keys(f"{prefix}/"):
        content = s3_server.read(key)
        for secret in secrets:
            assert secret.encode() not in content, key
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        for table in ("runs", "models", "aliases"):
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                for secret in secrets:
                    assert secret not in repr(tuple(row)), table
    engine.dispose()
