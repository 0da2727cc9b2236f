"""The scorer on Ray Serve (shared local cluster), over real HTTP, with tiny models."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from cluster.config import ServeSpec
from cluster.modeling import load_classifier, predict_proba
from cluster.registry import Registry

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_cluster, tiny_model_dir, tmp_path_factory):
    """Serve on a free port; yields (deploy function, url); shuts Serve down afterwards."""
    from ray import serve

    from jobs.deploy import deploy

    port = free_port()

    def deploy_model(model_dir, **kw):
        spec = ServeSpec(
            model=str(model_dir),
            port=port,
            precision="fp32",
            cpus_per_replica=0.5,
            max_texts=8,
            max_chars=200,
            **kw,
        )
        return deploy(spec, start_head=False, timeout_s=180)

    deploy_model(tiny_model_dir)
    yield deploy_model, f"http://127.0.0.1:{port}"
    serve.shutdown()


def other_model(tiny_model_dir, tmp_path) -> Path:
    """A second tiny model: same architecture, different weights."""
    import torch

    from cluster.modeling import save_model_dir

    model, tok, _ = load_classifier(tiny_model_dir)
    with torch.no_grad():
        model.classifier.weight.mul_(-3)
    return save_model_dir(model, tok, tmp_path / "other", {"base_model": "tiny-random-bert"})


def test_predictions_match_offline_and_contract(served, tiny_model_dir):
    _, url = served
    texts = [
        "great flight, thanks!",
        "delayed two hours again",
        "ok",
        "the crew was rude and the seat broken",
    ]
    r = httpx.post(f"{url}/v1/predict", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"id": str(tiny_model_dir), "labels": ["negative", "neutral", "positive"]}
    model, tok, labels = load_classifier(tiny_model_dir)
    ref = predict_proba(model, tok, texts, max_length=128, precision="fp32")
    got = np.array([[p["probs"][lab] for lab in labels] for p in body["predictions"]])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert [p["label"] for p in body["predictions"]] == [labels[i] for i in ref.argmax(1)]
    assert [p["score"] for p in body["predictions"]] == pytest.approx(ref.max(1).tolist(), abs=1e-5)
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "model": str(tiny_model_dir)}
    assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "evalcluster scorer"
    assert httpx.get(f"{url}/docs").status_code == 200


def test_model_info_has_lineage_and_registry_metrics(served, tiny_model_dir, evalcluster_home):
    deploy_model, url = served
    reg = Registry()
    run = reg.start_run("evaluate", {}, model_id=str(tiny_model_dir), dataset_fingerprint="fp")
    reg.finish_run(run, metrics={"f1_macro": 0.5})
    info = httpx.get(f"{url}/v1/model").json()
    assert info["lineage"] == {"base_model": "tiny-random-bert"} and info["precision"] == "fp32"
    # The replica reads the registry of the deploying user's EVALCLUSTER_HOME (passed at deploy time);
    # this test's home is newer than the module's deployment, so redeploy to point at it.
    deploy_model(tiny_model_dir)
    info = httpx.get(f"{url}/v1/model").json()
    assert info["metrics"]["run_id"] == run and info["metrics"]["f1_macro"] == 0.5


@pytest.mark.parametrize(
    "content, headers, status, fragment",
    [
        (b'{"texts": ["a",', {"content-type": "application/json"}, 422, "json"),
        (json.dumps({"texts": "not a list"}).encode(), {"content-type": "application/json"}, 422, "texts"),
        (json.dumps({"text": ["a"]}).encode(), {"content-type": "application/json"}, 422, "texts"),
        (json.dumps({"texts": []}).encode(), {"content-type": "application/json"}, 422, "texts"),
        (
            json.dumps({"texts": ["a"] * 9}).encode(),
            {"content-type": "application/json"},
            413,
            "too many texts",
        ),
        (
            json.dumps({"texts": ["x" * 201]}).encode(),
            {"content-type": "application/json"},
            413,
            "201 characters",
        ),
        (json.dumps({"texts": [1, 2]}).encode(), {"content-type": "application/json"}, 422, "string"),
        (b'{"texts": ["\xff\xfe bad bytes"]}', {"content-type": "application/json"}, 400, "UTF-8"),
        (json.dumps({"texts": ["   "]}).encode(), {"content-type": "application/json"}, 422, "empty"),
    ],
)
def test_bad_payloads_get_4xx_json_naming_the_problem(served, content, headers, status, fragment):
    _, url = served
    r = httpx.post(f"{url}/v1/predict", content=content, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    assert fragment in json.dumps(r.json())


def test_explain_gives_token_attributions(served):
    _, url = served
    r = httpx.post(f"{url}/v1/explain", json={"text": "terrible delay, lost my bag"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    tokens = [t["token"] for t in body["tokens"]]
    assert tokens[0] == "[CLS]" and "terrible" in tokens and tokens[-1] == "[SEP]"
    assert any(abs(t["attribution"]) > 0 for t in body["tokens"])
    assert body["label"] in ("negative", "neutral", "positive")


def test_fuzzing_the_openapi_schema_finds_no_5xx(served):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    _, url = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            response = case.call(base_url=url, timeout=60)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)

        check()


def test_api_key(served, tiny_model_dir, monkeypatch):
    deploy_model, url = served
    monkeypatch.setenv("EVALCLUSTER_API_KEY", "s3cret")
    deploy_model(tiny_model_dir)
    try:
        assert httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}).status_code == 401
        bad = httpx.post(
            f"{url}/v1/predict", json={"texts": ["hi"]}, headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401 and "API key" in bad.json()["detail"]
        ok = httpx.post(
            f"{url}/v1/predict", json={"texts": ["hi"]}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200  # health stays open
    finally:
        monkeypatch.delenv("EVALCLUSTER_API_KEY")
        deploy_model(tiny_model_dir)
    assert httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}).status_code == 200


class Load:
    """Closed-loop clients in threads; counts failed requests and the model ids answered."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.stop, self.failures, self.ok, self.models = url, threading.Event(), 0, 0, []
        self.threads = [threading.Thread(target=self.loop) for _ in range(clients)]

    def loop(self):
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"{self.url}/v1/predict", json={"texts": ["is my flight on time?"]})
                    if r.status_code == 200:
                        self.ok += 1
                        self.models.append(r.json()["model"]["id"])
                    else:
                        self.failures += 1
                except httpx.HTTPError:
                    self.failures += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def test_hot_swap_fails_no_request(served, tiny_model_dir, tmp_path):
    deploy_model, url = served
    new = other_model(tiny_model_dir, tmp_path)
    with Load(url) as load:
        time.sleep(1)
        deploy_model(new)
        time.sleep(2)
    assert load.failures == 0 and load.ok > 10
    assert load.models[0] == str(tiny_model_dir) and load.models[-1] == str(new)
    deploy_model(tiny_model_dir)


def test_killed_replica_is_replaced_with_few_failures(served, tiny_model_dir):
    from jobs.query import post

    deploy_model, url = served
    deploy_model(tiny_model_dir, replicas=2)

    def pids():
        return subprocess.run(
            ["pgrep", "-f", "ServeReplica:evalcluster:Scorer"],
            capture_output=True,
            text=True,
        ).stdout.split()

    assert len(pids()) == 2
    with Load(url) as load:
        time.sleep(1)
        os.kill(int(pids()[0]), signal.SIGKILL)
        retried = [
            post(url, "/v1/predict", {"texts": ["retry me"]}) for _ in range(20)
        ]  # evalctl query's path
        deadline = time.time() + 120
        while len(pids()) < 2 and time.time() < deadline:
            time.sleep(0.5)
    assert len(pids()) == 2, "Serve did not replace the killed replica"
    assert load.failures <= 5 and load.ok > 10, (load.failures, load.ok)  # a few in-flight requests at most
    assert len(retried) == 20  # with retries the client saw none
    deploy_model(tiny_model_dir)


def test_serve_config_is_a_valid_serve_deploy_schema():
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    schema = (
        ServeDeploySchema.model_validate(cfg)
        if hasattr(ServeDeploySchema, "model_validate")
        else ServeDeploySchema.parse_obj(cfg)
    )
    (app,) = schema.applications
    assert app.import_path == "serve.app:build_app"
    ServeSpec(**app.args)  # every arg is a ServeSpec field


def test_query_cli_prints_labels(served, evalctl, tmp_path):
    _, url = served
    f = tmp_path / "texts.txt"
    f.write_text("love it\n\nhate it\n")
    proc = evalctl("query", "neutral statement", "--file", f, "--url", url)
    assert proc.returncode == 0, proc.stderr
    assert "love it" in proc.stdout and "negative" in proc.stdout
    bad = evalctl("query", "x", "--url", "http://127.0.0.1:9")
    assert bad.returncode == 2 and "no answer from http://127.0.0.1:9" in bad.stderr


def test_deploy_refuses_bare_encoder(ray_cluster):
    from cluster.errors import UserError
    from jobs.deploy import deploy

    with pytest.raises(UserError, match="has no id2label"):
        deploy(ServeSpec(model="base"), start_head=False)
