"""Token attributions of an evaluation's most confident mistakes, by a Ray actor beside the pipeline.

The attribution itself is cluster/explain.py (the same code path as the scorer's
``/v1/explain``). The actor loads its own copy of the model while the inference
actors run, so its imports and model load stay off the critical path (started only
after the pipeline, the same work took 5-9 s on 2 busy cores, measured here).
"""

from __future__ import annotations

from pathlib import Path


class Explainer:
    """A Ray actor that computes token attributions (cluster/explain.py) with its own copy of the
    model. Started beside the inference pipeline, so its imports and model load overlap inference
    (measured: 5-9 s on 2 busy cores when it started only after the pipeline, on the critical path)."""

    def __init__(self, model_path: str, max_length: int):
        import torch

        from cluster.modeling import load_classifier
        from cluster.runtime import worker_threads

        torch.set_num_threads(worker_threads())
        self.model, self.tokenizer, _ = load_classifier(model_path)
        self.max_length = max_length

    def explain(self, texts: list[str]) -> list[dict]:
        from cluster.explain import token_attributions

        return [token_attributions(self.model, self.tokenizer, t, max_length=self.max_length) for t in texts]


def start_explainer(model_path: Path, max_length: int):
    """The Explainer actor (no CPU reserved: it works a second or two at the end, after the
    inference actors, which hold the CPUs, are done), on this process's node: ``model_path`` is
    this machine's copy, and a worker node lost mid-run must not take the explainer with it
    (with no CPU asked, Ray put it on any node, a lost one included)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0, num_gpus=0, scheduling_strategy=here)(Explainer)
    return actor.remote(str(model_path), max_length)


def add_attributions(pairs: list[dict], explainer) -> None:
    """Token attributions of every example in ``pairs``, toward its (wrong) prediction."""
    import ray

    examples = [e for p in pairs for e in p["examples"]]
    found = ray.get(explainer.explain.remote([e["text"] for e in examples])) if examples else []
    for example, a in zip(examples, found, strict=True):
        example["tokens"] = a["tokens"]
