"""`evalctl query`: score texts against the served model over HTTP (with retries)."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from cluster.apikey import api_key
from cluster.errors import UserError
from cluster.specs.settings import settings
from jobs.entry import console

log = logging.getLogger(__name__)
RETRIES = 4  # connection errors and 5xx are retried with exponential back-off (0.25 s, 0.5 s, ...)


def post(url: str, path: str, payload: dict | None, retries: int = RETRIES, timeout: float = 60) -> dict:
    """POST JSON (GET when ``payload`` is None); retry connection errors and 5xx (e.g. a replica being
    replaced); 4xx fail at once."""
    key = api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    last = ""
    for attempt in range(retries + 1):
        try:
            method = "GET" if payload is None else "POST"
            r = httpx.request(
                method, f"{url.rstrip('/')}{path}", json=payload, headers=headers, timeout=timeout
            )
            if r.status_code < 500:
                if r.status_code >= 400:
                    raise UserError(f"{url}{path} refused the request ({r.status_code}): {_detail(r)}")
                return r.json()
            last = f"HTTP {r.status_code}: {_detail(r)}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            log.info("%s%s: %s; retry %d of %d", url, path, last, attempt + 1, retries)
            time.sleep(0.25 * 2**attempt)
    raise UserError(
        f"no answer from {url}{path} after {retries + 1} tries ({last}); "
        "is the model served? (`evalctl serve status`)"
    )


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        return json.dumps(body.get("detail", body))[:300]
    except ValueError:
        return r.text[:300]


def query(
    texts: list[str] = typer.Argument(None, help="Texts to score."),
    file: Path | None = typer.Option(None, help="A file with one text per line."),
    image: list[Path] = typer.Option(None, "--image", help="An image file (PNG/JPEG) to score; repeatable."),
    url: str | None = typer.Option(
        None, help="The scorer's base URL (default: $EVALCLUSTER_URL, else 127.0.0.1:8000)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON response."),
    explain: bool = typer.Option(
        False, help="Also explain: per-token attributions, or per-pixel saliency (POST /v1/explain)."
    ),
    saliency_out: Path | None = typer.Option(
        None, help="With --explain and images: write each saliency overlay PNG into this directory."
    ),
    translate: bool = typer.Option(
        False, "--translate", help="Translate the texts (POST /v1/translate) with a served translation model."
    ),
    out: Path = typer.Option(
        Path("."), help="Segmentation models: where each image's mask and overlay PNG go."
    ),
) -> None:
    """Print label, score and probabilities per text or image (retries while a replica restarts); for a
    segmentation model, write each image's mask and overlay and print its class shares; with
    --translate, print the served translation model's translations."""
    url = url or settings().url
    if translate:
        from jobs.translate_cli import query_translations

        query_translations(_texts(texts, file), url, as_json, post)
        return
    if image and post(url, "/v1/model", None).get("task") == "segmentation":
        from jobs.query_segment import encoded_files, write_segmentations

        result = post(url, "/v1/segment", {"images": encoded_files(list(image))})
        write_segmentations(list(image), result, as_json, out)
        return
    if image:
        query_images(list(image), url, as_json, explain, saliency_out)
        return
    texts = _texts(texts, file)
    result = post(url, "/v1/predict", {"texts": texts})
    if as_json:
        console.print_json(data=result)
    else:
        _print_predictions(texts, result)
    if explain:
        for text in texts:
            _print_explanation(post(url, "/v1/explain", {"text": text}))


def _texts(texts: list[str] | None, file: Path | None) -> list[str]:
    """The texts given as arguments, then the lines of ``file``; at least one."""
    texts = list(texts or [])
    if file:
        if not file.is_file():
            raise UserError(f"--file {file} not found")
        texts += [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not texts:
        raise UserError('nothing to score: give texts (evalctl query "some text") or --file FILE')
    return texts


def query_images(files: list[Path], url: str, as_json: bool, explain: bool, out: Path | None) -> None:
    """POST the image files base64-encoded; print predictions (and saliency summaries)."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"--image: no such file: {', '.join(missing)}")
    encoded = [base64.b64encode(f.read_bytes()).decode("ascii") for f in files]
    result = post(url, "/v1/predict", {"images": encoded})
    if as_json:
        console.print_json(data=result)
    else:
        _print_predictions([f.name for f in files], result)
    if not explain:
        return
    for f, b64 in zip(files, encoded, strict=True):
        s = post(url, "/v1/explain", {"image": b64})
        sal = s["saliency"]
        line = f"{f.name}: {s['label']} {s['score']:.3f} ({s['method']})"
        line += f", saliency map {sal['width']}x{sal['height']}"
        if (sal["width"], sal["height"]) != (sal["image_width"], sal["image_height"]):
            line += f" (image {sal['image_width']}x{sal['image_height']}, reduced: max_explain_pixels)"
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            png = out / f"{f.stem}.saliency.png"
            png.write_bytes(base64.b64decode(sal["overlay_png"]))
            line += f"; overlay {png}"
        console.print(line)


def _print_predictions(texts: list[str], result: dict) -> None:
    labels = result["model"]["labels"]
    table = Table("text", "label", "score", *labels, title=f"model {result['model']['id']}")
    for text, p in zip(texts, result["predictions"], strict=True):
        table.add_row(
            text[:60], p["label"], f"{p['score']:.3f}", *[f"{p['probs'][lab]:.3f}" for lab in labels]
        )
    console.print(table)


def _print_explanation(result: dict) -> None:
    parts = []
    for t in result["tokens"]:
        a = t["attribution"]
        style = "green" if a > 0 else "red"
        parts.append(f"[{style}]{escape(t['token'])}({a:+.2f})[/]")
    console.print(f"{result['label']} {result['score']:.3f} ({result['method']}): " + " ".join(parts))
