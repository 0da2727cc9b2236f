"""The scores a finished run is ranked by: rows of the ``scores`` table, taken from its metrics.

An evaluation or robustness run's headline metrics (what the registry keeps of its
metrics.json) give one row per (metric, subset): ``value`` and its 95% interval
(``ci_low``, ``ci_high``, NULL without one). Subsets:

- ``""``: the whole dataset (the metric table's scores at the top level);
- ``slice:VALUE``: the rows whose slice column holds VALUE (``slices`` in the headline);
- ``perturbation:KIND@RATE``: the run's rows perturbed by KIND at RATE (robustness runs; no
  interval: the run records the interval of the *change* against its clean rows, not of the score).

Rows are written in the transaction that finishes the run (``Registry.finish_run``), so a
run is ranked exactly when its record says it finished; leaderboards read them through
an index (cluster/registry/queries.py). Only finite numbers are scored.
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from sqlalchemy import bindparam, insert, update

from cluster.registry.db.schema import runs, scores

SCORED_KINDS = ("evaluate", "robustness")  # kinds whose metrics are test scores on their dataset
OVERALL = ""
SLICE = "slice:"
PERTURBATION = "perturbation:"
NOT_SCORES = ("flip_rate", "mcnemar_p")  # numbers a perturbation records beside its scores


def perturbation_subset(kind: str, rate: float) -> str:
    return f"{PERTURBATION}{kind}@{rate:g}"


def subset_kind(subset: str) -> str:
    """The run kind whose rows hold ``subset``: robustness runs for perturbations, else evaluations."""
    return "robustness" if subset.startswith(PERTURBATION) else "evaluate"


def describe_subset(subset: str) -> str:
    """For people: ``all rows``, ``slice airline``, ``typo at rate 0.1``."""
    if subset.startswith(SLICE):
        return f"slice {subset[len(SLICE) :]}"
    if subset.startswith(PERTURBATION):
        kind, _, rate = subset[len(PERTURBATION) :].rpartition("@")
        return f"{kind} at rate {rate}"
    return "all rows"


def score_rows(metrics: dict | None) -> list[dict]:
    """``{metric, subset, value, ci_low, ci_high}`` for every finite score in a run's headline metrics."""
    if not isinstance(metrics, dict):
        return []
    rows = _scalars(metrics, metrics.get("ci95"), OVERALL)
    for value, s in _dict(metrics.get("slices")).items():
        rows += _scalars(_dict(s), _dict(s).get("ci95"), f"{SLICE}{value}")
    rob = _dict(metrics.get("robustness"))
    rate = rob.get("rate")
    if _finite(rate):
        for kind, p in _dict(rob.get("perturbations")).items():
            scores = {k: v for k, v in _dict(p).items() if k not in NOT_SCORES}
            rows += _scalars(scores, None, perturbation_subset(kind, rate))
    return rows


def _scalars(values: dict, cis, subset: str) -> list[dict]:
    cis = _dict(cis)
    out = []
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
            continue  # n (an int), flags and NaN (e.g. top-2 accuracy of two classes) are not ranked
        ci = cis.get(name)
        ok = isinstance(ci, list | tuple) and len(ci) == 2 and all(_finite(c) for c in ci)
        out.append(
            {
                "metric": name,
                "subset": subset,
                "value": value,
                "ci_low": float(ci[0]) if ok else None,
                "ci_high": float(ci[1]) if ok else None,
            }
        )
    return out


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


# The finish of a scored run: constant statements with their values bound at execution, so each
# is compiled once per process (building them per call cost 5.6 ms of client CPU per start+finish
# pair on PostgreSQL instead of 1.0, measured over 200 pairs with time.process_time).
_FINISH = (
    update(runs)
    .where(runs.c.id == bindparam("run_id"), runs.c.status == "running")
    .returning(runs.c.kind, runs.c.dataset_fingerprint, runs.c.created_at)
)  # SET columns: the execution's other parameters
_KINDS = ", ".join(f"'{k}'" for k in SCORED_KINDS)
_PG_FINISH = sa.text(f"""
WITH done AS (
  UPDATE runs SET status = 'finished', finished_at = :finished_at, metrics = :metrics,
    artifact_path = COALESCE(:artifact_path, artifact_path), model_id = COALESCE(:model_id, model_id),
    progress = COALESCE(:progress, progress)
  WHERE id = :run_id AND status = 'running'
  RETURNING id, kind, dataset_fingerprint, created_at
), written AS (
  INSERT INTO scores (run_id, kind, dataset_fingerprint, metric, subset, value, ci_low, ci_high, created_at)
  SELECT done.id, done.kind, done.dataset_fingerprint, g.metric, g.subset, g.value, g.ci_low, g.ci_high,
    done.created_at
  FROM done, unnest(CAST(:metric AS text[]), CAST(:subset AS text[]), CAST(:value AS float8[]),
                    CAST(:ci_low AS float8[]), CAST(:ci_high AS float8[]))
             AS g(metric, subset, value, ci_low, ci_high)
  WHERE done.kind IN ({_KINDS}) AND done.dataset_fingerprint IS NOT NULL
  RETURNING 1
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM written)
""")  # fmt: skip


def finish_scored(db, run_id: str, values: dict, rows: list[dict]) -> bool:
    """Finish the running run ``run_id`` with ``values`` (finished_at, metrics, and artifact_path /
    model_id / progress where not None) and write its score ``rows`` when its kind is scored, atomically;
    False when no running run matched (nothing written).

    PostgreSQL: one statement (the UPDATE and the INSERT as data-modifying CTEs), so a finish stays
    one round trip in autocommit, as unscored finishes are. SQLite: one write transaction."""
    if db.target.backend == "postgresql":
        params = {"run_id": run_id, "artifact_path": None, "model_id": None, "progress": None, **values}
        params.update({c: [r[c] for r in rows] for c in ("metric", "subset", "value", "ci_low", "ci_high")})
        return db.write_one_row(_PG_FINISH, params)[0] == 1
    with db.write() as conn:
        run = conn.execute(_FINISH, {"run_id": run_id, "status": "finished", **values}).first()
        if run is not None and run.kind in SCORED_KINDS and run.dataset_fingerprint:
            fixed = {"run_id": run_id, "kind": run.kind, "created_at": run.created_at}
            fixed["dataset_fingerprint"] = run.dataset_fingerprint
            conn.execute(insert(scores), [{**fixed, **r} for r in rows])
    return run is not None
