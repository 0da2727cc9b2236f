"""The translation API (serve/translate.py): POST /v1/translate, limits, batching, `evalctl query --translate`.

The served translations must equal the offline ones (the same model, precision and generation
settings); one module-scoped Serve deployment (conftest ``served``) is hot-swapped from the tiny
classifier to a tiny translator and back.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

from cluster.errors import UserError
from tests.translation_helpers import EN

SERVE_KW = dict(max_new_tokens=6, num_beams=1)  # an untrained decoder runs to the limit: keep it short


def test_build_app_gives_a_translation_model_the_translator(translator_dir, monkeypatch):
    from serve.app import app_args, build_app

    monkeypatch.delenv("EVALCLUSTER_API_KEY", raising=False)
    app = build_app({"model": str(translator_dir)})  # builds without a cluster
    deployment = app._bound_deployment
    assert deployment.name == "Scorer" and deployment.func_or_class.__name__ == "Translator"
    assert app_args({"model": str(translator_dir)})["task"] == "translation"


@pytest.mark.parametrize(
    "payload, where",
    [({"texts": []}, "texts"), ({"texts": ["ok", "  "]}, "texts.1"), ({"text": "x"}, "text")],
)
def test_translate_requests_are_checked_before_they_are_batched(payload, where):
    from pydantic import ValidationError

    from serve.translate_schemas import TranslateRequest

    with pytest.raises(ValidationError) as err:
        TranslateRequest.model_validate(payload)
    assert where in {".".join(map(str, e["loc"])) for e in err.value.errors()}


@pytest.mark.ray
def test_translate_endpoint_contract(served, translator_dir, evalctl):
    from cluster.models.seq2seq import load_translator

    deploy, url = served
    result = deploy(translator_dir, **SERVE_KW)
    assert result["task"] == "translation"
    offline = load_translator(translator_dir).translate(EN[:4], max_new_tokens=6, precision="fp32")

    r = httpx.post(f"{url}/v1/translate", json={"texts": EN[:4]}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["id"] == str(translator_dir) and body["model"]["task"] == "translation"
    assert body["translations"] == offline  # the same generation online and offline

    # Concurrent single-text requests share batches and each gets its own translation.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda t: httpx.post(f"{url}/v1/translate", json={"texts": [t]}, timeout=60), EN[:4] * 2)
        )
    assert [a.json()["translations"][0] for a in answers] == offline * 2

    info = httpx.get(f"{url}/v1/model", timeout=30).json()
    assert info["task"] == "translation" and info["generation"] == {"num_beams": 1, "max_new_tokens": 6}
    assert info["limits"] == {"max_texts": 8, "max_chars": 200} and "path" not in info
    assert httpx.get(f"{url}/healthz", timeout=30).json()["model"] == str(translator_dir)

    too_many = httpx.post(f"{url}/v1/translate", json={"texts": ["a"] * 9}, timeout=30)
    assert too_many.status_code == 413 and "too many texts: 9 > limit 8" in too_many.json()["detail"]
    too_long = httpx.post(f"{url}/v1/translate", json={"texts": ["ok", "x" * 201]}, timeout=30)
    assert too_long.status_code == 413 and "texts[1] has 201 characters > limit 200" in too_long.text
    blank = httpx.post(f"{url}/v1/translate", json={"texts": ["ok", " "]}, timeout=30)
    assert blank.status_code == 422 and blank.json()["detail"][0]["loc"] == ["body", "texts", 1]
    wrong = httpx.post(f"{url}/v1/predict", json={"texts": ["ok"]}, timeout=30)
    assert wrong.status_code == 409 and "POST /v1/translate" in wrong.json()["detail"]

    proc = evalctl("query", "--translate", EN[0], EN[1], "--json", env={"EVALCLUSTER_URL": url})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["translations"] == offline[:2]


@pytest.mark.ray
def test_query_translate_against_a_classifier_is_one_clear_line(served, tiny_model_dir, evalctl):
    deploy, url = served
    deploy(tiny_model_dir)
    proc = evalctl("query", "--translate", "hello", env={"EVALCLUSTER_URL": url})
    assert proc.returncode == 2 and "does not translate (no POST /v1/translate)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_query_translate_needs_texts():
    from jobs.query import _texts

    with pytest.raises(UserError, match="nothing to score"):
        _texts([], None)
