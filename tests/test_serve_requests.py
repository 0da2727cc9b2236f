"""Requests that must not get through, or hurt others: the API key, and texts that fail."""

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from cluster.errors import UserError
from cluster.models.text import load_classifier

pytestmark = pytest.mark.ray


def test_api_key_from_a_file_guards_everything_but_health(
    served, tiny_model_dir, monkeypatch, tmp_path, evalctl
):
    deploy_model, url = served
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    monkeypatch.setenv("EVALCLUSTER_API_KEY_FILE", str(key_file))
    deploy_model(tiny_model_dir)
    try:
        r = httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        bad = httpx.post(
            f"{url}/v1/predict", json={"texts": ["hi"]}, headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401 and "API key" in bad.json()["detail"]
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.post(f"{url}/v1/explain", json={"text": "hi"}).status_code == 401
        # the key is checked before the body: without it, a bad body says nothing about the schema
        for content in (b'{"texts": 5}', b'{"texts": ["a",', b'{"text": ["a"]}'):
            r = httpx.post(f"{url}/v1/predict", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 401 and "texts" not in r.text, (content, r.text)
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        assert httpx.get(f"{url}/docs").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/v1/model", headers=auth).json()["path"] == str(tiny_model_dir)
        ok = httpx.post(
            f"{url}/v1/predict", json={"texts": ["hi"]}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200  # health stays open
        # evalctl query sends $EVALCLUSTER_API_KEY (or the file's key) as a bearer token
        monkeypatch.delenv("EVALCLUSTER_API_KEY_FILE")
        refused = evalctl("query", "hi", "--url", url)
        assert refused.returncode == 2 and "401" in refused.stderr
        assert evalctl("query", "hi", "--url", url, env={"EVALCLUSTER_API_KEY": "s3cret"}).returncode == 0
    finally:
        monkeypatch.delenv("EVALCLUSTER_API_KEY_FILE", raising=False)
        deploy_model(tiny_model_dir, no_api_key=True)  # a redeploy keeps the key unless told otherwise
    assert httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}).status_code == 200


def test_redeploy_without_the_key_keeps_auth_unless_no_api_key(served, tiny_model_dir, monkeypatch):
    deploy_model, url = served
    monkeypatch.delenv("EVALCLUSTER_API_KEY_FILE", raising=False)
    monkeypatch.setenv("EVALCLUSTER_API_KEY", "k-7731")
    first = deploy_model(tiny_model_dir)
    assert first["auth"] == "API key: required (from $EVALCLUSTER_API_KEY)"
    monkeypatch.delenv("EVALCLUSTER_API_KEY")  # a hot swap from a shell without the key
    kept = deploy_model(tiny_model_dir)
    assert "kept from the running deployment" in kept["auth"]
    assert httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}).status_code == 401
    headers = {"Authorization": "Bearer k-7731"}
    assert httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}, headers=headers).status_code == 200
    opened = deploy_model(tiny_model_dir, no_api_key=True)
    assert opened["auth"] == "API key: none, the endpoint is open (auth turned off by --no-api-key)"
    assert httpx.post(f"{url}/v1/predict", json={"texts": ["hi"]}).status_code == 200
    monkeypatch.setenv("EVALCLUSTER_API_KEY", "k-7731")
    with pytest.raises(UserError, match="--no-api-key was given: choose one"):
        deploy_model(tiny_model_dir, no_api_key=True)


BAD_UNICODE = "x\ud800"  # a lone surrogate: valid JSON ("x\\ud800"), but not encodable text
VALID = "is my flight on time?"  # every token id < 5,000 (see vocab_limited_model)


def concurrent_rounds(url: str, bad: dict, path: str = "/v1/predict", rounds: int = 10, valid: int = 31):
    """``rounds`` times: ``valid`` good requests and one ``bad`` one sent at once; the responses
    of each round in order (the bad one last)."""

    async def one_round(client):
        payloads = [{"texts": [VALID]}] * valid + [bad]
        return await asyncio.gather(
            *(
                # json.dumps escapes a lone surrogate as \ud800 (httpx's json= would fail to encode it)
                client.post(
                    url + (path if p is bad else "/v1/predict"),
                    content=json.dumps(p).encode(),
                    headers={"content-type": "application/json"},
                )
                for p in payloads
            )
        )

    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            return [await one_round(client) for _ in range(rounds)]

    return asyncio.run(main())


def split(results):
    good = [r for round_ in results for r in round_[:-1]]
    return Counter(r.status_code for r in good), [round_[-1] for round_ in results]


@pytest.mark.parametrize(
    "path, bad", [("/v1/predict", {"texts": [BAD_UNICODE]}), ("/v1/explain", {"text": BAD_UNICODE})]
)
def test_one_bad_text_fails_only_its_own_request(served, path, bad):
    _, url = served
    statuses, bad_answers = split(concurrent_rounds(url, bad, path))
    assert statuses == {200: 310}, statuses
    for r in bad_answers:
        assert r.status_code == 422 and r.headers["content-type"] == "application/json", r.text
        assert "surrogate" in r.text and "text" in r.text, r.text
    mixed = httpx.post(
        f"{url}/v1/predict",
        content=json.dumps({"texts": ["fine", BAD_UNICODE]}).encode(),
        headers={"content-type": "application/json"},
    )
    assert mixed.status_code == 422 and ["body", "texts", 1] in [d["loc"] for d in mixed.json()["detail"]]


def vocab_limited_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with 5,000 embedding rows: a text with a higher token id ("zebra" is 29145)
    passes every check and then fails inside the model, as an unforeseen bug would."""
    from transformers import BertConfig, BertForSequenceClassification

    from cluster.models.text import save_model_dir

    config = BertConfig.from_pretrained(tiny_model_dir)
    config.vocab_size = 5000
    _, tok, _ = load_classifier(tiny_model_dir)
    model = BertForSequenceClassification(config).eval()
    return save_model_dir(model, tok, tmp_path / "small-vocab", {"base_model": "tiny-random-bert"})


def replica_logs_mention(text: str, timeout: float = 60) -> bool:
    """Whether a Scorer replica's log (this session's logs/serve/) mentions ``text``."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(text in f.read_text(errors="replace") for f in logs.glob("replica_evalcluster_Scorer_*")):
            return True
        time.sleep(0.5)
    return False


def test_a_text_the_model_fails_on_fails_only_its_own_request(served, tiny_model_dir, tmp_path):
    deploy_model, url = served
    deploy_model(vocab_limited_model(tiny_model_dir, tmp_path))
    try:
        statuses, bad_answers = split(concurrent_rounds(url, {"texts": ["zebra"]}))
        assert statuses == {200: 310}, statuses
        for r in bad_answers:  # an unexpected error: JSON naming the request, never a bare text page
            assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
            body = r.json()
            assert body["detail"] and body["request_id"] == r.headers["x-request-id"], body
        assert replica_logs_mention(bad_answers[-1].json()["request_id"])
    finally:
        deploy_model(tiny_model_dir)
