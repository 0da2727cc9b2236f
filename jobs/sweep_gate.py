"""A sweep's quality gate: evaluate the sweep's best model, judge it, and say what it was judged on.

The gate (SweepSpec.gate, a GateSpec plus ``data``) runs after the trials: the best
model is evaluated with `evalctl evaluate`'s own code on the gate's data (default:
the sweep's validation data, the data the trials were selected on, which the result
says). With a baseline (``best``, any model, or an evaluation run) the comparison is
paired on the same rows; a baseline model without an evaluation of that data is
evaluated first. ``best`` moves only when the gate passes (jobs/sweep.py
promote_best); the sweep's record keeps the verdicts and the reason.
"""

from __future__ import annotations

from cluster.errors import UserError
from cluster.registry.record import Registry
from cluster.specs.workloads import EvaluateSpec, GateSpec, SweepSpec


def gate_model(spec: SweepSpec, model_id: str, registry: Registry) -> dict:
    """Evaluate ``model_id`` on the gate's data with the gate; returns the verdicts and what was used."""
    from cluster.evaluation.run import run_evaluate

    g = spec.gate
    data = g.data or spec.validation
    note = "" if g.data else "judged on the validation data the trials were selected on (optimistic)"
    gate, why = _gate_for(g, registry, data, spec)
    note = "; ".join(x for x in (note, why) if x)
    if gate is None:  # only a drop condition, and nothing to compare with yet
        return {"passed": True, "data": data.path, "evaluation_run": None, "conditions": [], "note": note}
    result = run_evaluate(
        EvaluateSpec(
            model=model_id, data=data, gate=gate, precision=spec.precision, owner=spec.owner, mistakes=0
        ),
        registry,
    )
    verdict = result.metrics["gate"]
    return {**verdict, "data": data.path, "evaluation_run": result.run_id, "note": note}


def _gate_for(g, registry: Registry, data, spec: SweepSpec) -> tuple[GateSpec | None, str]:
    """The GateSpec to evaluate with, and a note: without a baseline yet (the first sweep), the drop
    conditions are left out; a baseline model not yet evaluated on the data is evaluated first."""
    fields = g.model_dump(exclude={"data"})
    if g.baseline == "best" and registry.resolve_model("best") is None:
        fields.update(baseline=None, max_drop={})
        why = "no baseline yet (alias best unset): drop conditions not checked"
        return (GateSpec(**fields) if fields["min"] or fields["max"] else None), why
    if g.baseline is not None:
        _ensure_evaluated(g.baseline, data, registry, spec)
    return GateSpec(**fields), ""


def _ensure_evaluated(baseline: str, data, registry: Registry, spec: SweepSpec) -> None:
    from cluster.data.scan import scan
    from cluster.evaluation.baseline import resolve_baseline
    from cluster.evaluation.run import run_evaluate
    from cluster.models.resolve import resolve_model

    modality = resolve_model(spec.model, registry).modality  # the fingerprint hashes its inputs
    try:
        resolve_baseline(registry, baseline, scan(data, modality=modality).fingerprint, data.path)
    except UserError as exc:
        if "has no finished evaluation" not in str(exc):
            raise
        run_evaluate(
            EvaluateSpec(model=baseline, data=data, precision=spec.precision, owner=spec.owner, mistakes=0),
            registry,
        )
