"""The training step both loops share: fp16 loss scaling, clipping, schedule (CPU autocast stands in for CUDA)."""

from types import SimpleNamespace

import numpy as np
import torch

from cluster.train.step import TrainStep, make_optimizer

HP = SimpleNamespace(learning_rate=0.05, weight_decay=0.0, warmup_ratio=0.0)


def tiny_problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    return model, x, y


def test_fp16_scales_the_loss_and_bf16_fp32_do_not():
    for precision, scaled in (("fp16", True), ("bf16", False), ("fp32", False)):
        model, _, _ = tiny_problem()
        step = TrainStep(model, *make_optimizer(model, HP, 10), precision)
        assert step.scaler.is_enabled() is scaled, precision


def test_fp16_steps_train_and_an_overflow_skips_the_step_and_its_schedule():
    model, x, y = tiny_problem()
    optimizer, scheduler = make_optimizer(model, HP, 100)
    step = TrainStep(model, optimizer, scheduler, "fp16")
    losses = [step(lambda: torch.nn.functional.cross_entropy(model(x), y)) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    scale, lr_steps = step.scaler.get_scale(), scheduler.last_epoch
    step(lambda: model(x).sum() * float("inf"))  # gradients overflow
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # step skipped
    assert step.scaler.get_scale() < scale and scheduler.last_epoch == lr_steps  # scale lowered, lr held


def test_gradients_are_clipped_after_unscaling():
    model, x, y = tiny_problem()
    seen = []
    optimizer, scheduler = make_optimizer(model, HP, 10)
    optimizer.register_step_pre_hook(  # the gradients the optimizer is about to apply
        lambda *_: seen.append(
            torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters())).item()
        )
    )
    step = TrainStep(model, optimizer, scheduler, "fp16", max_grad_norm=0.01)
    for _ in range(20):  # the first steps may overflow at the initial scale (2**16) and be skipped
        step(lambda: torch.nn.functional.cross_entropy(model(x), y))
    assert seen and max(seen) <= 0.01 + 1e-6  # the true gradient norm is clipped, not the scaled one


def test_no_weight_decay_on_biases_and_layernorm():
    model = torch.nn.ModuleDict({"dense": torch.nn.Linear(4, 4), "LayerNorm": torch.nn.LayerNorm(4)})
    optimizer, _ = make_optimizer(model, SimpleNamespace(**{**vars(HP), "weight_decay": 0.1}), 10)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p is model["dense"].weight for p in decay["params"]] == [True]
