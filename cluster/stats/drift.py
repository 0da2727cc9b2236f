"""Label-free checks that a current dataset differs from a reference one (domain shift).

Each check returns its statistic, a p-value (and a CI where one is natural), an
effect size and a verdict. The verdicts are Bonferroni-corrected over the checks
that ran: "drift" when p < alpha / m. With labels on both sides, the metric gap
(current - reference) comes with an unpaired bootstrap CI.

    predictions  chi-square test of homogeneity of predicted-class counts (effect: Cramer's V)
    confidence   two-sample Kolmogorov-Smirnov on the top-class probabilities
    length       KS on token lengths, from bounded histograms (exact D for integer lengths)
    unknown      rate of [UNK] tokens: z-test with a ratio-estimator variance over texts
    domain       cross-validated logistic regression telling the two sides apart by
                 embeddings: out-of-fold ROC-AUC (0.5 = indistinguishable) with a bootstrap
                 CI, one-sided Mann-Whitney p for AUC > 0.5

Inputs are arrays or small mergeable summaries (:class:`TextProfile`), which the
pipeline produces per shard; the domain classifier subsamples to ``max_rows``.

Example::

    >>> import numpy as np
    >>> r = prediction_drift(reference_counts=np.array([50, 30, 20]), current_counts=np.array([20, 30, 50]))
    >>> round(r["statistic"], 2), r["p_value"] < 0.001
    (25.71, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from cluster.errors import UserError
from cluster.stats import codec

ALPHA = 0.05
MAX_TOKENS = 512  # length histogram bins: 0..MAX_TOKENS-1 tokens, the last bin holds longer texts


def _result(test: str, statistic: float, p: float, effect: dict, **extra) -> dict:
    return {"test": test, "statistic": float(statistic), "p_value": float(p), "effect": effect, **extra}


def prediction_drift(*, reference_counts: np.ndarray, current_counts: np.ndarray) -> dict:
    """Chi-square test that predicted classes are distributed alike (counts per class)."""
    table = np.vstack([reference_counts, current_counts]).astype(float)
    if (table.sum(1) == 0).any():
        raise UserError("prediction drift needs predictions on both datasets")
    table = table[:, table.sum(0) > 0]  # a class neither side predicts carries no information
    if table.shape[1] < 2:  # both sides predict one and the same class
        return _result("chi-square", 0.0, 1.0, {"cramers_v": 0.0}, dof=0)
    chi2, p, dof, _ = sps.chi2_contingency(table, correction=False)
    v = np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
    shares = (table / table.sum(1, keepdims=True)).round(6).tolist()
    return _result("chi-square", chi2, p, {"cramers_v": float(v)}, dof=int(dof), shares=shares)


def confidence_drift(*, reference: np.ndarray, current: np.ndarray) -> dict:
    """Two-sample KS test of the top-class probabilities (8 bytes a row)."""
    ref, cur = np.asarray(reference, float), np.asarray(current, float)
    if not len(ref) or not len(cur):
        raise UserError("confidence drift needs predictions on both datasets")
    res = sps.ks_2samp(ref, cur)
    effect = {"mean_reference": float(ref.mean()), "mean_current": float(cur.mean())}
    return _result("kolmogorov-smirnov", res.statistic, res.pvalue, effect)


# ------------------------------------------------------------------ text profiles (mergeable)


@dataclass
class TextProfile:
    """Token-length histogram and [UNK] sums of a set of texts; ``a + b`` merges exactly."""

    length_hist: np.ndarray  # (MAX_TOKENS + 1,) texts per token length, the last bin = longer
    tokens: int = 0  # sum of t_i (tokens per text)
    unk: int = 0  # sum of u_i ([UNK] tokens per text)
    unk_sq: int = 0  # sum of u_i^2
    unk_tok: int = 0  # sum of u_i t_i
    tok_sq: int = 0  # sum of t_i^2

    def __add__(self, other: TextProfile) -> TextProfile:
        return TextProfile(
            self.length_hist + other.length_hist,
            *(getattr(self, f) + getattr(other, f) for f in ("tokens", "unk", "unk_sq", "unk_tok", "tok_sq")),
        )

    @property
    def n(self) -> int:
        return int(self.length_hist.sum())


def text_profile(texts: list[str], *, tokenizer) -> TextProfile:
    """Profile of texts under a Hugging Face tokenizer (WordPiece: [UNK] = ``unk_token_id``)."""
    return profile_from_counts(*token_counts(texts, tokenizer=tokenizer))


def token_counts(texts: list[str], *, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, [UNK] tokens) of each text, without special tokens or truncation."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []
    t = np.array([len(x) for x in ids], np.int64)
    u = np.array([sum(1 for i in x if i == tokenizer.unk_token_id) for x in ids], np.int64)
    return t, u


def profile_from_counts(t: np.ndarray, u: np.ndarray) -> TextProfile:
    """The profile of texts with ``t`` tokens and ``u`` [UNK] tokens each."""
    t, u = np.asarray(t, np.int64), np.asarray(u, np.int64)
    hist = np.bincount(np.minimum(t, MAX_TOKENS), minlength=MAX_TOKENS + 1)
    return TextProfile(
        hist, int(t.sum()), int(u.sum()), int((u * u).sum()), int((u * t).sum()), int((t * t).sum())
    )


def length_drift(*, reference: TextProfile, current: TextProfile) -> dict:
    """KS test on token lengths from the histograms; with ties (integers) the p-value is conservative."""
    n1, n2 = reference.n, current.n
    if not n1 or not n2:
        raise UserError("length drift needs texts on both datasets")
    cdf1, cdf2 = np.cumsum(reference.length_hist) / n1, np.cumsum(current.length_hist) / n2
    d = float(np.abs(cdf1 - cdf2).max())
    p = float(sps.kstwo.sf(d, round(n1 * n2 / (n1 + n2))))  # scipy's ks_2samp(method="asymp")
    bins = np.arange(MAX_TOKENS + 1)
    effect = {
        "mean_reference": float(bins @ reference.length_hist / n1),
        "mean_current": float(bins @ current.length_hist / n2),
    }
    return _result("kolmogorov-smirnov (histogram)", d, p, effect)


def unknown_token_drift(*, reference: TextProfile, current: TextProfile, confidence: float = 0.95) -> dict:
    """z-test of the [UNK] rates (current - reference). Tokens of one text are not independent, so
    each rate's variance is the ratio estimator's with texts as clusters:
    var(U/T) = sum_i (u_i - r t_i)^2 / T^2 = (S_uu - 2 r S_ut + r^2 S_tt) / T^2."""
    rates, variances = [], []
    for prof in (reference, current):
        if not prof.tokens:
            raise UserError("unknown-token drift needs non-empty texts on both datasets")
        r = prof.unk / prof.tokens
        rates.append(r)
        variances.append(max(0.0, prof.unk_sq - 2 * r * prof.unk_tok + r * r * prof.tok_sq) / prof.tokens**2)
    diff, se = rates[1] - rates[0], float(np.sqrt(sum(variances)))
    z = diff / se if se > 0 else 0.0
    p = float(2 * sps.norm.sf(abs(z))) if se > 0 else (1.0 if diff == 0 else 0.0)
    half = sps.norm.ppf(0.5 + confidence / 2) * se
    effect = {"rate_reference": rates[0], "rate_current": rates[1], "diff": diff}
    return _result("z (ratio estimator)", z, p, effect, ci95=[diff - half, diff + half])


# ------------------------------------------------------------------ the domain classifier


def domain_classifier(
    *,
    reference: np.ndarray,
    current: np.ndarray,
    folds: int = 5,
    max_rows: int = 2000,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """How well a classifier tells current from reference rows by their embeddings (n, d).

    Out-of-fold probabilities of a standardised logistic regression (stratified k-fold);
    identical rows share a fold, so a text present on both sides cannot be memorised with
    one label and scored with the other (that pushes the AUC below 0.5). Each side is
    subsampled to ``max_rows`` (seeded). CI: the threshold module's bootstrap of the AUC.
    p: one-sided Mann-Whitney test that current rows score higher (AUC > 0.5).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cluster.stats.threshold import compute_threshold_metrics

    rng = np.random.default_rng(seed)
    sides = [_subsample(np.asarray(x, np.float64), max_rows, rng) for x in (reference, current)]
    if min(len(s) for s in sides) < folds:
        raise UserError(f"the domain classifier needs at least {folds} embedded rows on each side")
    x = np.vstack(sides)
    y = np.repeat([0, 1], [len(s) for s in sides])
    groups = np.unique(x, axis=0, return_inverse=True)[1].ravel()  # identical rows, one group
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    score = cross_val_predict(model, x, y, cv=cv, groups=groups, method="predict_proba")[:, 1]
    m = compute_threshold_metrics(
        y_true=y,
        probs=np.c_[1 - score, score],
        labels=["reference", "current"],
        bootstrap=bootstrap,
        seed=seed,
    )
    auc = m["per_class"]["current"]["roc_auc"]
    p = sps.mannwhitneyu(score[y == 1], score[y == 0], alternative="greater").pvalue
    effect = {"auc": auc, "rows": [len(s) for s in sides]}
    return _result(
        "domain classifier (mann-whitney)", auc, p, effect, ci95=m["per_class"]["current"].get("roc_auc_ci95")
    )


def _subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= max_rows else x[np.sort(rng.choice(len(x), max_rows, replace=False))]


def mean_pooled_embeddings(
    model, tokenizer, texts: list[str], *, max_length: int = 128, batch_size: int = 64
) -> np.ndarray:
    """(n, hidden) float32, in input order: the encoder's last hidden states averaged over each
    text's tokens. ``model`` is a transformers encoder or a sequence classifier (its
    ``base_model`` is used). Texts are length-sorted into batches, as predict_proba does."""
    import torch

    encoder = getattr(model, "base_model", model)
    device = next(encoder.parameters()).device
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    out = np.zeros((len(order), encoder.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad([{k: enc[k][i] for k in enc} for i in idx], return_tensors="pt").to(device)
            hidden = encoder(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
    return out


# ------------------------------------------------------------------ with labels: the metric gap


def metric_gap(*, reference, current, labels: list[str], confidence: float = 0.95) -> dict:
    """current - reference per metric, unpaired: both are cluster.stats.metrics.Stats with bootstrap
    replicates. The two datasets' rows are unrelated, but rows with the same position get the
    same hashed weights under one seed; pairing reference replicate b with current replicate
    b + 1 makes the two sides' weights independent whatever seeds were used."""
    from cluster.stats.metrics import paired_metrics, scores_from_confusion

    b = min(len(reference.boot_confusion), len(current.boot_confusion))
    if b < 2:
        raise UserError("the metric gap needs bootstrap replicates on both evaluations (--bootstrap > 1)")
    ref, cur = scores_from_confusion(reference.confusion), scores_from_confusion(current.confusion)
    ref_b = scores_from_confusion(reference.boot_confusion[:b])
    cur_b = scores_from_confusion(np.roll(current.boot_confusion[:b], -1, axis=0))
    alpha = (1 - confidence) / 2
    out = {}
    for m in paired_metrics():
        diff = cur_b[m] - ref_b[m]
        out[m] = {
            "reference": float(ref[m]),
            "current": float(cur[m]),
            "gap": float(cur[m] - ref[m]),
            "ci95": [float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))],
        }
    return out


# ------------------------------------------------------------------ all checks


def drift_report(checks: dict[str, dict], *, alpha: float = ALPHA) -> dict:
    """Verdicts for results of the checks above, Bonferroni-corrected over the checks that ran."""
    if not checks:
        raise UserError("no drift check could run: give predictions, texts or embeddings for both datasets")
    level = alpha / len(checks)
    out = {}
    for name, res in checks.items():
        out[name] = {**res, "verdict": "drift" if res["p_value"] < level else "no drift"}
    overall = "drift" if any(r["verdict"] == "drift" for r in out.values()) else "no drift"
    return {"checks": out, "alpha": alpha, "alpha_per_check": level, "verdict": overall}


codec.register(TextProfile)  # part files hold them (cluster/stats/codec.py)
