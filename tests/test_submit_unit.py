"""Job submission without a cluster: the job a spec becomes, what it uploads, its API key digest."""

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from cluster.errors import UserError
from cluster.specs.serve import ServeSpec
from cluster.specs.workloads import DataSpec, EvaluateSpec, SweepSpec
from jobs.submit import PROJECT_ROOT, job_request, localize
from jobs.upload import stage

LOCAL = "http://127.0.0.1:8265"
REMOTE = "http://ray-head.example:8265"
SECRETS = [
    ".env",
    ".env.local",
    "api_key.txt",
    ".ray/auth_token",
    "registry.db",
    "secrets/prod.json",
    ".aws/credentials",
    "id_rsa",
    ".netrc",
]


def planted_project(root: Path) -> Path:
    """A project dir with the packages, a data file, and secrets at the top and inside packages."""
    for rel in [
        "cluster/apikey.py",
        "jobs/cli.py",
        "jobs/configs/sweep.yaml",
        "serve/app.py",
        "pyproject.toml",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("# code\n")
    (root / "data").mkdir()
    (root / "data" / "test.parquet").write_bytes(b"PAR1")
    for rel in [
        *SECRETS,
        "jobs/.env",
        "cluster/secrets/key.json",
        "cluster/secrets/loader.py",
        "serve/id_ed25519",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("s3cret-value\n")
    return root


def test_upload_is_an_allow_list_and_says_what_it_left_out(tmp_path):
    root = planted_project(tmp_path / "proj")
    staged = stage(root, [root / "data" / "test.parquet"])
    try:
        uploaded = sorted(str(p.relative_to(staged.root)) for p in staged.root.rglob("*") if p.is_file())
        assert uploaded == [
            "cluster/apikey.py",  # code that reads a key is code
            "data/test.parquet",
            "jobs/cli.py",
            "jobs/configs/sweep.yaml",
            "pyproject.toml",
            "serve/app.py",
        ]
        assert not any(
            "s3cret" in p.read_text(errors="ignore") for p in staged.root.rglob("*") if p.is_file()
        )
        line = staged.summary()
        for left_out in [
            "jobs/.env",
            "cluster/secrets/key.json",
            "cluster/secrets/loader.py",
            "serve/id_ed25519",
        ]:
            assert left_out in staged.secrets and left_out in line
        for top in [
            ".env",
            ".env.local",
            "api_key.txt",
            ".ray",
            "registry.db",
            "secrets",
            ".aws",
            "id_rsa",
            ".netrc",
        ]:
            assert top in staged.not_uploaded, top
    finally:
        staged.cleanup()
    assert not staged.root.exists()


# issue 28, point 2: uploaded with a job before (not matched), or left out without being named
CREDENTIAL_FILES = [
    "serve/api_token.txt",
    "serve/.pgpass",
    "jobs/kubeconfig",
    "jobs/kubeconfig.yaml",
    "cluster/.config/gcloud/application_default_credentials.json",
    "cluster/gcloud/configurations/config_default",
    "jobs/.azure/msal_token_cache.json",
    "jobs/azure/config",
    "serve/.boto",
    "serve/.s3cfg",
    "serve/rclone.conf",
    "jobs/.vault-token",
    "jobs/.databrickscfg",
    "jobs/.my.cnf",
    "serve/.pg_service.conf",
    "serve/prod.keystore",
    "serve/service-account.json",
    "jobs/github_token",
    "cluster/tls.key",
    "cluster/db_password.txt",
]


def test_common_credential_files_stay_out_and_each_is_named(tmp_path):
    root = planted_project(tmp_path / "proj")
    model = root / "models" / "m1"  # a named model dir: Hugging Face's tokenizer files are no secrets
    tokenizer_files = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ]
    for rel in [*CREDENTIAL_FILES, *(f"models/m1/{n}" for n in tokenizer_files)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("s3cret-value\n" if not rel.startswith("models") else "{}\n")
    staged = stage(root, [model])
    try:
        assert not any(
            "s3cret" in p.read_text(errors="ignore") for p in staged.root.rglob("*") if p.is_file()
        )
        assert {f"models/m1/{n}" for n in tokenizer_files} <= set(staged.files)
        line = staged.summary()
        for rel in CREDENTIAL_FILES:  # every one named, not the first 8
            assert rel in staged.secrets and rel in line, rel
    finally:
        staged.cleanup()


def test_a_long_list_left_out_says_how_many_more(tmp_path):
    root = planted_project(tmp_path / "proj")
    for i in range(60):
        (root / "serve" / f"k{i:02d}.key").write_text("s3cret\n")
    staged = stage(root)
    try:
        line = staged.summary()
        assert len(staged.secrets) == 64 and "(+14 more)" in line and "serve/k00.key" in line
    finally:
        staged.cleanup()


def test_a_named_secret_is_refused(tmp_path):
    root = planted_project(tmp_path / "proj")
    with pytest.raises(UserError, match="looks like a secret"):
        stage(root, [root / "secrets" / "prod.json"])


def test_the_real_project_uploads_its_packages_only():
    staged = stage(PROJECT_ROOT)
    try:
        tops = {f.split("/", 1)[0] for f in staged.files}
        assert tops == {"cluster", "jobs", "serve", "pyproject.toml"}
        assert staged.secrets == []  # no project module is mistaken for a secret
        on_disk = {
            str(p.relative_to(PROJECT_ROOT))
            for d in ("cluster", "jobs", "serve")
            for p in (PROJECT_ROOT / d).rglob("*.py")
        }
        assert on_disk <= set(staged.files)
        assert "jobs/configs/sweep.yaml" in staged.files and "cluster/specs/workloads.py" in staged.files
        assert not any("__pycache__" in f for f in staged.files)
    finally:
        staged.cleanup()


def test_paths_are_localised_by_field_not_by_guessing(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    # `name` is not a path field, even when a directory of that name exists
    spec = SweepSpec(name="jobs", storage_path="out/sweeps", train=DataSpec(path="pyproject.toml"))
    here = localize(spec, same_machine=True)
    assert here.name == "jobs" and here.train.path == str(PROJECT_ROOT / "pyproject.toml")
    assert here.storage_path == str(PROJECT_ROOT / "out" / "sweeps")
    assert here.model == "base"  # a MODEL name, not a directory
    remote = localize(spec, same_machine=False)
    assert remote.train.path == "pyproject.toml" and remote.storage_path == "out/sweeps"
    outside = EvaluateSpec(data=DataSpec(path=str(tmp_path)))
    with pytest.raises(UserError, match="data.path = .* is a local path the cluster cannot see"):
        localize(outside, same_machine=False)
    uri = EvaluateSpec(data=DataSpec(path="s3://bucket/test.parquet"))
    assert localize(uri, same_machine=False) == uri


def test_job_request_carries_the_validated_spec(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    spec = EvaluateSpec(model="best", data=DataSpec(path="pyproject.toml"), limit=10)
    request = job_request("jobs.evaluate", spec, REMOTE)
    try:
        argv = shlex.split(request.entrypoint)
        assert argv[:4] == ["python", "-m", "jobs.evaluate", "--spec-json"]
        sent = EvaluateSpec.model_validate_json(argv[4])
        assert sent.limit == 10 and sent.data.path == "pyproject.toml" and sent.owner  # the submitter
        assert "pyproject.toml" in request.staged.files  # the named input travels with the job
        assert request.runtime_env["working_dir"] == str(request.staged.root)
    finally:
        request.staged.cleanup()


def test_submitted_deploy_carries_the_key_digest_never_the_key(monkeypatch):
    from jobs.deploy import WORKLOAD

    key = "k-8f3a-very-secret-key"
    monkeypatch.setenv("EVALCLUSTER_API_KEY", key)
    spec = ServeSpec(model="best")
    argv, env = WORKLOAD.job_extras(spec, {"no_api_key": False})
    request = job_request("jobs.deploy", spec, LOCAL, ["deploy", *argv], env)
    try:
        everything = request.entrypoint + json.dumps(request.runtime_env)
        assert key not in everything
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert request.runtime_env["env_vars"]["EVALCLUSTER_API_KEY_SHA256"] == digest
        assert shlex.split(request.entrypoint)[3] == "deploy"
    finally:
        request.staged.cleanup()
    off, env = WORKLOAD.job_extras(spec, {"no_api_key": True})
    assert off == ["--no-api-key"] and env == {}


def test_forwarded_digest_is_what_the_job_serves_with(monkeypatch):
    from cluster.apikey import api_key_digest

    monkeypatch.delenv("EVALCLUSTER_API_KEY", raising=False)
    monkeypatch.delenv("EVALCLUSTER_API_KEY_FILE", raising=False)
    digest = hashlib.sha256(b"abc").hexdigest()
    monkeypatch.setenv("EVALCLUSTER_API_KEY_SHA256", digest)
    assert api_key_digest() == digest
    monkeypatch.setenv("EVALCLUSTER_API_KEY_SHA256", "not-a-digest")
    assert api_key_digest() is None


class _AgentLate:
    """A job client whose head's job agent registers after ``late`` submissions (Ray's 500)."""

    def __init__(
        self,
        late: int,
        error: str = "Request failed with status code 500: No available agent to submit job, please try again later..",
    ):
        self.late, self.error, self.calls = late, error, 0

    def submit_job(self, **kwargs):
        self.calls += 1
        if self.calls <= self.late:
            raise RuntimeError(self.error)
        return kwargs["submission_id"]


def test_submission_waits_for_the_head_job_agent_bounded():
    from jobs.submit import JobRequest, _submit

    request = JobRequest("evaluate-1", "python -m jobs.evaluate", {}, None)
    client = _AgentLate(2)
    _submit(client, request, agent_wait_s=30)
    assert client.calls == 3
    with pytest.raises(UserError, match="No available agent"):
        _submit(_AgentLate(99), request, agent_wait_s=0)  # past its deadline: one clear line
    other = _AgentLate(1, error="Request failed with status code 400: bad runtime_env")
    with pytest.raises(UserError, match="bad runtime_env"):
        _submit(other, request, agent_wait_s=30)
    assert other.calls == 1  # any other refusal is not retried
