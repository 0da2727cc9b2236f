"""Token attributions of a classifier's prediction: gradient x input over the input embeddings.

One code path for the scorer's ``POST /v1/explain`` (serve/app.py) and the evaluation
report's most confident mistakes (jobs/evaluate.py). For each token, the attribution
is the dot product of the embedding with the gradient of the target class's logit
with respect to it (summed over the hidden size): positive = pushes toward the
target class.

Example (any sequence classifier and its tokenizer)::

    a = token_attributions(model, tokenizer, "lost my bag again", max_length=64)
    a["label"], a["score"], a["tokens"][:2]   # 0, 0.91, [{"token": "[CLS]", "attribution": ...}, ...]
"""

from __future__ import annotations

METHOD = "gradient x input (embeddings)"


def token_attributions(
    model, tokenizer, text: str, *, max_length: int = 128, target: int | None = None
) -> dict:
    """Attributions toward ``target`` (default: the predicted class) of one text.

    Returns ``{"label": class id predicted, "score": its probability, "target": class id
    explained, "tokens": [{"token", "attribution"}]}`` with the tokenizer's tokens
    ([CLS] and [SEP] included), in text order.
    """
    import torch

    device = next(model.parameters()).device
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    with torch.enable_grad():
        emb = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, attention_mask=enc["attention_mask"]).logits[0].float()
        probs = torch.softmax(logits.detach(), -1)
        pred = int(probs.argmax())
        target = pred if target is None else int(target)
        (grad,) = torch.autograd.grad(logits[target], emb)
    attr = (grad * emb).sum(-1)[0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    return {
        "label": pred,
        "score": float(probs[pred]),
        "target": target,
        "tokens": [{"token": t, "attribution": a} for t, a in zip(tokens, attr, strict=True)],
    }
