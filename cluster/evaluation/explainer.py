"""Token attributions of an evaluation's most confident mistakes, by the run's own model actors.

The attribution itself is cluster/models/explain.py (the same code path as the scorer's
``/v1/explain``). It runs on a model actor of the evaluation (cluster/evaluation/predictor.py:
``ModelActor.explain``) once the pipeline is done: that actor already holds the model.

Why not an actor of its own (what this replaced): it loaded a second copy of the model
(a new worker importing torch + transformers: ~6 s of CPU) beside the pipeline. On 2
cores that load took a core from the inference: a warm run's actors are ready at once,
so its inference ran beside that load, at about half speed (measured: 1,000 rows in 9.0 s
warm against 4.5 s on a freshly loaded actor; benchmarks/warm_inference.py shows the
same actor's score call 1.8x slower while such a load runs beside it).
"""

from __future__ import annotations

THREADS = 1  # the attributions' torch threads, whatever the plan: the same run gives the same numbers


def add_attributions(pairs: list[dict], handles: list, max_length: int) -> None:
    """Token attributions of every example in ``pairs``, toward its (wrong) prediction, by the
    first of the model actors ``handles`` still alive (a node lost mid-run may take some).

    On :data:`THREADS` threads: a run's attributions are then the same numbers whether it had
    one actor of 2 threads or two of 1 (a matrix product's sums may split by thread count)."""
    import ray

    examples = [e for p in pairs for e in p["examples"]]
    if not examples:
        return
    texts = [e["text"] for e in examples]
    for i, handle in enumerate(handles):
        try:
            found = ray.get(handle.explain.remote(texts, max_length, THREADS))
            break
        except ray.exceptions.RayActorError:
            if i == len(handles) - 1:
                raise
    for example, a in zip(examples, found, strict=True):
        example["tokens"] = a["tokens"]
