"""Trainer state in sweep checkpoints: exact round trip, and nothing in a checkpoint runs code."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.errors import UserError


def trainer(seed: int = 0):
    """A small model with AdamW and the sweep's linear warm-up schedule, a few steps in."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, n: int) -> list[float]:
    """``n`` steps on random data drawn from every RNG the trainer uses; the losses."""
    losses = []
    for _ in range(n):
        x = torch.randn(5, 8) + float(np.random.rand()) + random.random()
        loss = model(x).logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_resume_from_saved_state_continues_exactly(tmp_path):
    from cluster.train.checkpoint import load_trainer_state, save_trainer_state

    model, optimizer, scheduler = trainer()
    train_steps(model, optimizer, scheduler, 3)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    save_trainer_state(tmp_path, optimizer, scheduler, step=3)
    expected = train_steps(model, optimizer, scheduler, 4)  # the run as it went on

    resumed, optimizer2, scheduler2 = trainer(seed=1)  # a fresh process: other weights, other RNG
    resumed.load_state_dict(weights)  # (the model itself is restored from its safetensors)
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    assert load_trainer_state(tmp_path, optimizer2, scheduler2) == 3
    assert train_steps(resumed, optimizer2, scheduler2, 4) == expected  # same losses, bit for bit
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


class Payload:
    """What a crafted pickle does when loaded: here, create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("with_real_state", [False, True])
def test_a_crafted_pickle_in_a_checkpoint_never_runs(tmp_path, with_real_state):
    """A `state.pt` planted in (shared) sweep storage is never unpickled on resume."""
    from cluster.tune.trial import _restore

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoint_000001"
    ckpt.mkdir()
    _, optimizer, scheduler = trainer()
    if with_real_state:
        from cluster.train.checkpoint import save_trainer_state

        save_trainer_state(ckpt, optimizer, scheduler, step=7)
    torch.save({"step": Payload(marker)}, ckpt / "state.pt")
    for name in ("trainer_state.pkl", "optimizer.pt", "rng_state.pth"):
        torch.save({"step": Payload(marker)}, ckpt / name)
    step = error = None
    try:
        step = _restore(ckpt, optimizer, scheduler)
    except Exception as exc:  # noqa: BLE001 - judged below, after the marker
        error = exc
    assert not marker.exists(), "the crafted pickle ran"
    if with_real_state:
        assert step == 7 and error is None  # the safe files are what is read
    else:
        assert isinstance(error, UserError) and "no trainer state" in str(error), repr(error)
        assert "never loaded" in str(error)


def test_tampered_state_is_refused_with_one_line(tmp_path):
    import json

    from cluster.train.checkpoint import STATE_JSON, load_trainer_state, save_trainer_state

    _, optimizer, scheduler = trainer()
    save_trainer_state(tmp_path, optimizer, scheduler, step=1)
    state = json.loads((tmp_path / STATE_JSON).read_text())
    state["state"]["step"] = {"__class__": "os.system", "args": ["touch pwned"]}
    (tmp_path / STATE_JSON).write_text(json.dumps(state))
    with pytest.raises(UserError, match="unreadable trainer state"):
        load_trainer_state(tmp_path, optimizer, scheduler)
