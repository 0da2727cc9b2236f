"""Quality gates: conditions on an evaluation's metrics, each judged with its value, CI and verdict.

Three kinds of condition (a GateSpec in cluster/specs/workloads.py):

    min       METRIC >= VALUE       a higher-is-better metric of the run
    max       METRIC <= VALUE       a lower-is-better metric of the run
    max_drop  baseline - run <= POINTS (x 100), paired on the same rows (cluster/stats/compare.py:
              the same Poisson row weights for both runs, McNemar's exact test beside it)

With ``use_ci_lower`` each condition is judged by the pessimistic end of its 95%
interval: the lower end for ``min``, the upper end for ``max`` and for the drop. A
metric without an interval (ECE) is judged by its value, and the line says so.

Example::

    >>> from cluster.specs.workloads import GateSpec
    >>> g = GateSpec(min={"f1_macro": 0.75}, use_ci_lower=True)
    >>> r = judge(g, {"f1_macro": 0.78, "ci95": {"f1_macro": [0.74, 0.81]}})
    >>> r["passed"], r["conditions"][0]["line"]
    (False, 'FAIL  f1_macro >= 0.7500 by its CI lower end 0.7400: 0.7800 [0.7400, 0.8100]')
"""

from __future__ import annotations

import math

from cluster.errors import UserError
from cluster.stats.metrics import metric_info, paired_metrics


def parse_conditions(value):
    """METRIC=VALUE conditions from the command line (repeated, or comma-separated) as a mapping;
    a mapping (YAML, where a key written twice is refused when read) passes through. A metric
    given twice is refused: the mapping would keep only the last. A pydantic BeforeValidator of
    GateSpec's conditions."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    out = {}
    for item in (part for v in value for part in str(v).split(",")):
        name, sep, number = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"conditions are METRIC=VALUE, e.g. f1_macro=0.75; got {item!r}")
        try:
            threshold = float(number)
        except ValueError as exc:
            raise ValueError(f"{name}: {number!r} is not a number") from exc
        if name in out:
            raise ValueError(
                f"{name} is given twice ({out[name]:g} and {threshold:g}); give each metric one condition"
            )
        out[name] = threshold
    return out


def direction(kind: str):
    """A pydantic AfterValidator body checking one kind of condition (see :func:`check_direction`)."""

    def check(conditions: dict[str, float]) -> dict[str, float]:
        try:
            return check_direction(kind, conditions)
        except UserError as exc:
            raise ValueError(str(exc)) from exc

    return check


def check_direction(kind: str, conditions: dict[str, float]) -> dict[str, float]:
    """``min`` takes higher-is-better metrics, ``max`` lower-is-better ones, ``max_drop`` paired ones;
    every threshold is finite and within the values the metric can take (its table row's bounds),
    and a drop is at most the width of that range, in points."""
    for metric, value in conditions.items():
        info = metric_info(metric)
        if kind == "min" and not info.higher_is_better:
            raise UserError(f"{metric} is lower-is-better; use --max {metric}=VALUE")
        if kind == "max" and info.higher_is_better:
            raise UserError(f"{metric} is higher-is-better; use --min {metric}=VALUE")
        if kind == "max_drop" and metric not in paired_metrics(None):
            raise UserError(f"{metric}: the paired comparison covers {', '.join(paired_metrics(None))}")
        if not math.isfinite(value):
            raise UserError(f"{metric}={value:g}: a threshold must be a finite number")
        low, high = info.bounds
        if kind == "max_drop" and value < 0:
            raise UserError(f"{metric}: give the allowed drop in points (>= 0), got {value}")
        if kind == "max_drop" and value > (high - low) * 100:
            raise UserError(f"{metric}={value:g}: a drop is at most {(high - low) * 100:g} points")
        if kind != "max_drop" and not low <= value <= high:
            raise UserError(f"{metric}={value:g}: outside the metric's range [{low:g}, {high:g}]")
    return conditions


def check_gate(spec) -> None:
    """Refuse a gate that cannot mean what it says (a GateSpec validator calls this)."""
    if not (spec.min or spec.max or spec.max_drop):
        raise UserError("a gate needs at least one condition: min, max or max_drop (--min METRIC=VALUE, ...)")
    if spec.max_drop and not spec.baseline:
        raise UserError("max_drop needs a baseline to compare with (--baseline MODEL_OR_RUN)")
    if spec.baseline and not spec.max_drop:
        raise UserError("a baseline is only used by max_drop (--max-drop METRIC=POINTS); give one")


def consistent_gate(spec):
    """GateSpec's model validator: :func:`check_gate` with pydantic's error type."""
    try:
        check_gate(spec)
    except UserError as exc:
        raise ValueError(str(exc)) from exc
    return spec


def judge(spec, metrics: dict, paired: dict | None = None) -> dict:
    """Verdicts of ``spec`` on a metrics.json dict; ``paired``: the comparison with the baseline
    ({"baseline": run id, "metrics": compare.differences(), "mcnemar_p": p}) when the gate has one."""
    ci95 = metrics.get("ci95") or {}
    rows = [_bound(spec, "min", m, v, metrics.get(m), ci95.get(m)) for m, v in spec.min.items()]
    rows += [_bound(spec, "max", m, v, metrics.get(m), ci95.get(m)) for m, v in spec.max.items()]
    if spec.max_drop:
        if paired is None:
            raise ValueError("a gate with max_drop needs the paired comparison")
        rows += [_drop(spec, m, v, paired) for m, v in spec.max_drop.items()]
    return {
        "passed": all(r["passed"] for r in rows),
        "use_ci_lower": spec.use_ci_lower,
        "baseline": paired.get("baseline") if paired else None,
        "conditions": rows,
    }


def _bound(spec, kind: str, metric: str, limit: float, value, ci) -> dict:
    op = ">=" if kind == "min" else "<="
    row = {"kind": kind, "metric": metric, "limit": limit, "value": value, "ci95": ci}
    shown = f"{metric} {op} {limit:.4f}"
    if value is None:
        return {**row, "passed": False, "line": f"FAIL  {shown}: undefined on this run"}
    judged, how = value, ""
    if spec.use_ci_lower and ci:
        end = "lower" if kind == "min" else "upper"
        judged, how = (
            ci[0] if kind == "min" else ci[1],
            f" by its CI {end} end {ci[0 if kind == 'min' else 1]:.4f}",
        )
    passed = judged >= limit if kind == "min" else judged <= limit
    interval = (
        f" [{ci[0]:.4f}, {ci[1]:.4f}]"
        if ci
        else " (no CI" + (": judged by its value)" if spec.use_ci_lower else ")")
    )
    line = f"{'PASS' if passed else 'FAIL'}  {shown}{how}: {value:.4f}{interval}"
    return {**row, "judged": judged, "passed": bool(passed), "line": line}


def _drop(spec, metric: str, points: float, paired: dict) -> dict:
    d = paired["metrics"][metric]  # a = baseline, b = this run; diff = b - a
    drop = -d["diff"] * 100 + 0.0  # + 0.0: no "-0.00" for an unchanged score
    ci = [-d["ci95"][1] * 100 + 0.0, -d["ci95"][0] * 100 + 0.0] if d["ci95"] else None
    judged = ci[1] if spec.use_ci_lower and ci else drop
    passed = judged <= points
    how = f" by its CI upper end {ci[1]:+.2f}" if spec.use_ci_lower and ci else ""
    # Classification: McNemar's test; segmentation: Wilcoxon on per-image IoU (its "p_value", "test").
    p, test = (
        (paired["mcnemar_p"], "McNemar") if "mcnemar_p" in paired else (paired["p_value"], paired["test"])
    )
    p_text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
    line = (
        f"{'PASS' if passed else 'FAIL'}  {metric} drop <= {points:.2f} points vs {paired['baseline']}{how}: "
        f"{drop:+.2f}{interval} points ({d['a']:.4f} -> {d['b']:.4f}), {test} {p_text}"
    )
    return {
        "kind": "max_drop",
        "metric": metric,
        "limit": points,
        "value": drop,
        "ci95": ci,
        "judged": judged,
        "baseline_value": d["a"],
        ("mcnemar_p" if test == "McNemar" else "p_value"): p,
        "passed": bool(passed),
        "line": line,
    }


def summary_line(result: dict) -> str:
    """The gate's last line: its verdict and how many conditions held."""
    n = len(result["conditions"])
    held = sum(r["passed"] for r in result["conditions"])
    return f"gate {'passed' if result['passed'] else 'FAILED'}: {held}/{n} conditions hold"
