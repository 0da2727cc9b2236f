"""The scorer's plumbing without Ray: deployment options, spec checks, API keys, CLI errors."""

import hashlib

import pytest
import yaml

from cluster.errors import UserError
from cluster.specs.parse import load_spec
from cluster.specs.serve import ServeSpec

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_fixed_replicas_and_batching_compatible_concurrency():
    from serve.app import deployment_options

    opts = deployment_options(ServeSpec(replicas=3, max_batch_size=48, cpus_per_replica=0.5))
    assert opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["max_ongoing_requests"] >= 48  # else batches could never fill up
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}  # no Ray, no GPU


def test_batches_wait_to_fill_only_under_concurrent_load():
    from serve.app import batch_wait_s

    spec = ServeSpec(batch_wait_ms=50)
    assert batch_wait_s(spec, 1) == 0.0  # the last batch was a lone request: do not delay the next
    assert batch_wait_s(spec, 7) == 0.05


def test_autoscaling_and_gpu_per_replica():
    from serve.app import deployment_options

    opts = deployment_options(ServeSpec(autoscale="1:4", target_ongoing_requests=8, gpus_per_replica=1))
    assert opts["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}
    assert "num_replicas" not in opts and opts["ray_actor_options"]["num_gpus"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch_size": 0}, "max_batch_size: must be >= 1"),
        ({"replicas": 0}, "replicas: must be >= 1"),
        ({"max_texts": 0}, "max_texts: must be >= 1"),
        ({"autoscale": "3:2"}, "autoscale: needs 0 <= MIN <= MAX and MAX >= 1, got 3:2"),
        ({"autoscale": "0:0"}, "MAX >= 1"),
        ({"autoscale": "4"}, "autoscale: must be MIN:MAX, e.g. 1:4; got '4'"),
        ({"batch_wait_ms": -1}, "batch_wait_ms: must be >= 0"),
        ({"cpus_per_replica": -1}, "cpus_per_replica: must be >= 0"),
        ({"port": 70000}, "port: must be <= 65535"),
    ],
)
def test_spec_refuses_nonsense(kwargs, message):
    with pytest.raises(UserError, match=message):
        load_spec(ServeSpec, kwargs)


def test_api_key_digest_from_env_or_file(monkeypatch, tmp_path):
    from serve.app import api_key_digest

    monkeypatch.delenv("MY_KEY", raising=False)
    monkeypatch.delenv("MY_KEY_FILE", raising=False)
    assert api_key_digest("MY_KEY") is None
    (tmp_path / "k").write_text("from-file\n")
    monkeypatch.setenv("MY_KEY_FILE", str(tmp_path / "k"))
    assert api_key_digest("MY_KEY") == hashlib.sha256(b"from-file").hexdigest()
    monkeypatch.setenv("MY_KEY", "from-env")  # the variable wins over the file
    assert api_key_digest("MY_KEY") == hashlib.sha256(b"from-env").hexdigest()


def test_build_app_from_the_config_file_args(tiny_model_dir, monkeypatch):
    from serve.app import app_args, build_app

    monkeypatch.delenv("EVALCLUSTER_API_KEY", raising=False)
    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    args = {**cfg["applications"][0]["args"], "model": str(tiny_model_dir)}
    build_app(args)  # builds without a cluster
    bound_args = app_args(args)  # what each replica is constructed with
    assert bound_args["path"] == str(tiny_model_dir) and bound_args["api_key_sha256"] is None
    assert "api_key" not in bound_args  # only a digest ever travels in the app config


def test_build_app_refuses_a_bare_encoder_and_unknown_args(tiny_model_dir):
    from serve.app import build_app

    with pytest.raises(UserError, match="has no id2label"):
        build_app({"model": "base"})
    with pytest.raises(UserError, match=r'max_batch: unknown key \(did you mean "max_batch_size"'):
        build_app({"model": str(tiny_model_dir), "max_batch": 4})


def test_serve_config_is_a_valid_serve_deploy_schema():
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    (app,) = ServeDeploySchema.model_validate(cfg).applications
    assert app.import_path == "serve.app:build_app" and app.route_prefix == "/"
    load_spec(ServeSpec, app.args)  # every arg is a ServeSpec field


@pytest.mark.cli
def test_cli_errors_are_one_line_exit_2(evalctl, tiny_model_dir, tmp_path):
    # each is refused before any Ray or head is started
    for args, message in [
        (["serve", "deploy", "--model", "base"], "has no id2label"),
        (["serve", "deploy", "--model", "nope"], 'MODEL "nope" resolves to nothing'),
        (["serve", "deploy", "--model", tiny_model_dir, "--autoscale", "4"], "--autoscale: must be MIN:MAX"),
        (["serve", "deploy", "--model", tiny_model_dir, "--autoscale", "3:1"], "0 <= MIN <= MAX"),
        (["serve", "deploy", "--model", tiny_model_dir, "--precision", "fp8"], "--precision: must be one of"),
        (["query"], "nothing to score"),
        (["query", "--file", tmp_path / "missing.txt"], "missing.txt not found"),
    ]:
        proc = evalctl(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


@pytest.mark.parametrize(
    "payload, where",
    [
        ({"texts": ["fine", "x\ud800"]}, "texts.1"),  # a lone surrogate: valid JSON, not encodable text
        ({"texts": ["   "]}, "texts.0"),
    ],
)
def test_texts_are_checked_before_they_are_batched(payload, where):
    from pydantic import ValidationError

    from serve.schemas import ExplainRequest, PredictRequest

    for cls, body in ((PredictRequest, payload), (ExplainRequest, {"text": payload["texts"][-1]})):
        with pytest.raises(ValidationError) as info:
            cls.model_validate(body)
        (error,) = info.value.errors()
        loc = ".".join(map(str, error["loc"]))
        assert loc == (where if cls is PredictRequest else "text"), error
        assert ("surrogate" if "\ud800" in payload["texts"][-1] else "empty") in error["msg"]


def test_healthz_answers_from_the_last_health_check_without_a_forward_pass():
    import asyncio
    from types import SimpleNamespace

    from fastapi import HTTPException

    from serve.app import Scorer

    cls = Scorer.func_or_class
    calls = []

    async def forward_pass(text):
        calls.append(text)
        raise RuntimeError("the model broke")

    replica = SimpleNamespace(
        model_id="m-1", _batch=forward_pass, health_failed_at=None, probe="health check"
    )
    assert asyncio.run(cls.healthz(replica)).model_dump() == {"status": "ok", "model": "m-1"}
    assert calls == []  # polling /healthz costs no model time
    with pytest.raises(RuntimeError):  # Serve's periodic check runs the model and records the outcome
        asyncio.run(cls.check_health(replica))
    assert calls == ["health check"]
    with pytest.raises(HTTPException) as info:
        asyncio.run(cls.healthz(replica))
    assert info.value.status_code == 503 and "last health check failed" in info.value.detail
    assert "the model broke" not in info.value.detail  # /healthz is open: no internals in it
    assert calls == ["health check"]


def test_api_key_check():
    from serve.app import key_matches

    digest = hashlib.sha256(b"s3cret").hexdigest()
    assert key_matches(None, None)  # no key configured: open
    assert key_matches(digest, "Bearer s3cret") and key_matches(digest, "bearer  s3cret ")
    for header in (None, "", "Bearer", "Bearer nope", "Basic s3cret", "s3cret", f"Bearer {digest}"):
        assert not key_matches(digest, header), header


def test_a_request_of_the_other_modality_names_the_right_field():
    from fastapi import HTTPException

    from serve.images import require_modality

    require_modality("image", "image")
    with pytest.raises(HTTPException) as exc:
        require_modality("image", "text")
    assert exc.value.status_code == 422 and 'send "images"' in exc.value.detail
    with pytest.raises(HTTPException) as exc:
        require_modality("text", "image")
    assert 'send "texts"' in exc.value.detail and 'not "images"' in exc.value.detail


def test_image_request_schema_takes_base64_and_one_modality():
    from pydantic import ValidationError

    from serve.schemas import ExplainRequest, PredictRequest

    assert PredictRequest(images=["iVBORw0KGgo="]).images == ["iVBORw0KGgo="]
    for body in ({"images": ["@@"]}, {"images": [""]}, {}, {"texts": ["a"], "images": ["iVBORw0KGgo="]}):
        with pytest.raises(ValidationError):
            PredictRequest(**body)
    assert ExplainRequest(image="iVBORw0KGgo=", target="cat").target == "cat"
    with pytest.raises(ValidationError):
        ExplainRequest()
