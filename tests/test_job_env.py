"""A submitted job's environment: registry and S3 settings by value, secrets only by reference."""

import json
import os
import stat

import pytest

from cluster.registry.db.url import configured_url
from cluster.specs.workloads import DataSpec, EvaluateSpec
from jobs.submit import PROJECT_ROOT, job_request

LOCAL = "http://127.0.0.1:8265"
REMOTE = "http://ray-head.example:8265"
PASSWORD = "pw-Zq81-never-shown"
URL = f"postgresql+psycopg://team:{PASSWORD}@db.example:5432/evalcluster"


def request_env(monkeypatch, address: str) -> tuple[dict, str]:
    monkeypatch.chdir(PROJECT_ROOT)
    request = job_request("jobs.evaluate", EvaluateSpec(data=DataSpec(path="pyproject.toml")), address)
    request.staged.cleanup()
    return request.runtime_env["env_vars"], request.entrypoint + json.dumps(request.runtime_env)


def private(path: str) -> bool:
    mode = os.stat(path).st_mode
    return stat.S_IMODE(mode) == 0o600 and stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_a_local_head_gets_the_database_url_as_a_private_file(monkeypatch, evalcluster_home):
    monkeypatch.setenv("EVALCLUSTER_DB", URL)
    env, everything = request_env(monkeypatch, LOCAL)
    assert PASSWORD not in everything
    assert env["EVALCLUSTER_DB"] == "" and private(env["EVALCLUSTER_DB_FILE"])
    assert os.path.dirname(env["EVALCLUSTER_DB_FILE"]) == str(evalcluster_home / "secrets")
    for key, value in env.items():  # the job, with these variables, reads the same URL
        monkeypatch.setenv(key, value)
    assert configured_url()[0] == URL


def test_a_remote_cluster_gets_no_database_setting_and_only_an_object_store_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALCLUSTER_DB", URL)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-never-shown")
    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", str(tmp_path))  # a laptop directory: not for the cluster
    env, everything = request_env(monkeypatch, REMOTE)
    assert PASSWORD not in everything and "aws-secret-never-shown" not in everything
    assert not {"EVALCLUSTER_DB", "EVALCLUSTER_DB_FILE", "EVALCLUSTER_ARTIFACTS"} & set(env)
    assert not any(k.startswith("AWS_") for k in env)  # the cluster's own Secret holds its S3 settings
    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://team-bucket/evalcluster")
    env, _ = request_env(monkeypatch, REMOTE)
    assert env["EVALCLUSTER_ARTIFACTS"] == "s3://team-bucket/evalcluster"


def test_a_local_head_reaches_s3_with_a_credentials_file_not_the_key(monkeypatch, s3_server):
    from cluster.data.storage import resolve

    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://evalcluster/t-job-env")
    env, everything = request_env(monkeypatch, LOCAL)
    assert s3_server.secret_key not in everything
    assert env["AWS_SECRET_ACCESS_KEY"] == "" and env["AWS_PROFILE"] == "evalcluster"
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint and private(env["AWS_SHARED_CREDENTIALS_FILE"])
    for key, value in env.items():  # as the job sees it: the key only in the file
        monkeypatch.setenv(key, value)
    fs, path = resolve("s3://evalcluster/t-job-env/probe.txt")
    with fs.open_output_stream(path) as f:
        f.write(b"written by the job")
    assert fs.open_input_stream(path).read() == b"written by the job"
    monkeypatch.undo()
    assert s3_server.read("t-job-env/probe.txt") == b"written by the job"


def test_credentials_in_the_artifact_uri_are_refused(monkeypatch):
    from cluster.errors import UserError

    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://AKIA:s3cr3t@bucket/x")
    with pytest.raises(UserError, match="credentials inside a URI are refused") as err:
        request_env(monkeypatch, REMOTE)
    assert "s3cr3t" not in str(err.value)
