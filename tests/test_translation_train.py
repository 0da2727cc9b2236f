"""Translation training: the loop resumes exactly from a checkpoint, and a sweep on Ray Tune registers
``best`` (cluster/train/seq2seq_loop.py, cluster/tune/translation_trial.py, jobs/sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from cluster.data.parallel import read_pairs
from cluster.errors import UserError
from cluster.specs.search_space import SearchSpace, TrialParams
from cluster.specs.translation import Seq2SeqSpec
from cluster.specs.workloads import DataSpec, ResourcesSpec, SchedulerSpec, SweepSpec
from tests.translation_helpers import EN, FR

TINY = Seq2SeqSpec(
    vocab_size=200,
    decoder_layers=1,
    decoder_hidden=32,
    decoder_heads=2,
    max_target_length=40,
    max_new_tokens=12,
)
HP = TrialParams(learning_rate=3e-3, batch_size=4, epochs=2, warmup_ratio=0.1, weight_decay=0.01,
                max_length=48, seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs")
    words = [w for s in EN for w in s.split()]
    rows = [(" ".join(words[i : i + 6]), " ".join(FR[i % len(FR)].split()[:6])) for i in range(0, 120, 5)]
    df = pd.DataFrame(rows, columns=["source", "target"])
    df.iloc[:16].to_parquet(out / "train.parquet")
    df.iloc[16:].to_parquet(out / "validation.parquet")
    return out


def _start(tiny_model_dir, pairs_dir):
    from cluster.models.seq2seq import start_translator
    from cluster.models.seq2seq_build import train_target_tokenizer

    train = read_pairs(DataSpec(path=str(pairs_dir / "train.parquet")))
    tok = train_target_tokenizer(FR, vocab_size=200, min_frequency=1)
    return start_translator(tiny_model_dir, TINY, target_tokenizer=tok, seed=0), train


def _trainer(tr, train):
    """The optimizer and scheduler of a run, and ``go(start_step, report)`` that trains to its end."""
    from cluster.train.loop import steps_per_epoch
    from cluster.train.seq2seq_loop import fine_tune_translation
    from cluster.train.step import make_optimizer

    optimizer, scheduler = make_optimizer(tr.model, HP, steps_per_epoch(len(train), 4) * 2)

    def go(start_step, report):
        fine_tune_translation(
            tr, optimizer, scheduler, train, train.take(range(4)), HP, max_target_length=40, max_new_tokens=6,
            precision="fp32", evals_per_epoch=2, start_step=start_step, report=report,
        )  # fmt: skip

    return optimizer, scheduler, go


def test_a_resumed_run_ends_with_the_same_weights(tiny_model_dir, pairs_dir, tmp_path):
    """Stopped after its second validation and resumed from that checkpoint (model, optimizer,
    scheduler, RNGs), training ends with exactly the weights of a run that never stopped."""
    from cluster.models.seq2seq import load_translator
    from cluster.train.checkpoint import load_trainer_state, save_trainer_state

    torch.manual_seed(0)
    tr, train = _start(tiny_model_dir, pairs_dir)
    optimizer, scheduler, go = _trainer(tr, train)
    reports = []

    def report(metrics, step):
        reports.append(metrics)
        if len(reports) == 2:  # checkpoint at the second validation (the end of epoch 1)
            tr.save_checkpoint(tmp_path / "ckpt")
            save_trainer_state(tmp_path / "ckpt", optimizer, scheduler, step)

    go(0, report)
    assert [r["step"] for r in reports] == [2, 4, 6, 8]
    assert {"bleu", "chrf", "ter", "length_ratio", "train_loss"} <= set(reports[0])
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    whole = {k: v.clone() for k, v in tr.model.state_dict().items()}

    torch.manual_seed(123)  # whatever the process's RNGs now hold: the checkpoint's are restored
    resumed = load_translator(tmp_path / "ckpt" / "model")
    optimizer, scheduler, go = _trainer(resumed, train)
    start = load_trainer_state(tmp_path / "ckpt", optimizer, scheduler)
    assert start == 4
    again = []
    go(start, lambda m, s: again.append(m))
    assert [r["step"] for r in again] == [6, 8]
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, whole[name]), name


def tiny_translation_sweep(tiny_model_dir, pairs_dir, **kw) -> SweepSpec:
    spec = dict(
        task="translation",
        model=str(tiny_model_dir),
        translation=TINY,
        metric="bleu",
        train=DataSpec(path=str(pairs_dir / "train.parquet")),
        validation=DataSpec(path=str(pairs_dir / "validation.parquet")),
        search=SearchSpace(learning_rate={"grid": [1e-3, 3e-3]}, batch_size=4, epochs=2, max_length=32),
        search_alg="grid",
        scheduler=SchedulerSpec(kind="asha", grace_period=1, reduction_factor=2),
        num_samples=1,
        max_concurrent_trials=2,
        resources=ResourcesSpec(cpus=1),
        evals_per_epoch=2,
        precision="fp32",
    )
    return SweepSpec(**{**spec, **kw})


@pytest.mark.ray
def test_translation_sweep_registers_a_translator_as_best(ray_cluster, tiny_model_dir, pairs_dir):
    from cluster.models.modality import model_task
    from cluster.models.modeldir import read_lineage
    from cluster.models.seq2seq import load_translator
    from cluster.registry.record import Registry
    from jobs.sweep import run_sweep

    summary = run_sweep(tiny_translation_sweep(tiny_model_dir, pairs_dir, name="tr1"))
    reg = Registry()
    best = reg.resolve_model("best")
    assert best["id"] == summary["model_id"] and summary["trials"] == 2
    assert {"bleu", "chrf", "ter"} <= set(summary["validation"])
    assert model_task(best["path"]) == "translation"
    lineage = read_lineage(best["path"])
    assert lineage["init"] == "pretrained" and lineage["trial_config"] == summary["best_config"]
    assert lineage["labels"] is None
    out = load_translator(best["path"]).translate(["God said"], max_new_tokens=5)
    assert len(out) == 1
    assert (
        reg.get_run(summary["run_id"])["dataset_fingerprint"]
        == read_pairs(DataSpec(path=str(pairs_dir / "train.parquet"))).fingerprint
    )


def test_a_translation_sweep_ranks_by_a_translation_metric(tiny_model_dir, pairs_dir):
    from jobs.sweep import run_sweep

    with pytest.raises(UserError, match="a translation sweep ranks trials by bleu, chrf, ter, not f1_macro"):
        run_sweep(tiny_translation_sweep(tiny_model_dir, pairs_dir, metric="f1_macro"))


def test_shipped_translation_config_is_valid():
    from cluster.specs.parse import load_spec_file

    spec = load_spec_file(
        SweepSpec, Path(__file__).resolve().parent.parent / "jobs/configs/sweep_translation.yaml"
    )
    assert spec.task == "translation" and spec.model == "base" and spec.metric == "bleu"
    assert spec.metric_mode == "max" and spec.scheduler.kind == "asha"
    assert spec.train.path == "data/translation/train.parquet"
