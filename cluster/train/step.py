"""What both training loops share: AdamW with a warm-up/decay schedule, and one training step.

Fine-tuning (cluster/train/loop.py) and masked-LM pretraining (jobs/pretrain.py) build
their optimizer here and take every step through :class:`TrainStep`: forward under
autocast at the run's precision, backward with fp16 loss scaling
(``torch.amp.GradScaler``: without it small fp16 gradients underflow to zero),
gradients unscaled then clipped to norm 1, optimizer and schedule stepped.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_GRAD_NORM = 1.0


def make_optimizer(model, hp, total_steps: int):
    """AdamW (no weight decay on biases and LayerNorm) + linear warm-up then linear decay.

    ``hp``: anything with ``learning_rate``, ``weight_decay`` and ``warmup_ratio`` attributes (a
    trial's TrialParams, or a PretrainSpec). A model whose ``new_layers`` names parameter prefixes
    (a segmentation model's new decoder) trains those at ``hp.decoder_lr_scale`` x the rate.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    new = tuple(getattr(model, "new_layers", ()))
    decay, no_decay, new_decay, new_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        plain = name.endswith("bias") or "LayerNorm" in name
        fresh = bool(new) and name.startswith(new)
        ((new_no_decay if fresh else no_decay) if plain else (new_decay if fresh else decay)).append(p)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if new:
        fast = hp.learning_rate * getattr(hp, "decoder_lr_scale", 1.0)
        groups += [
            {"params": new_decay, "weight_decay": hp.weight_decay, "lr": fast},
            {"params": new_no_decay, "weight_decay": 0.0, "lr": fast},
        ]
    optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate)
    warmup = int(hp.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


class TrainStep:
    """One optimizer step at a precision (fp32, bf16 autocast, or fp16 autocast with loss scaling)."""

    def __init__(self, model, optimizer, scheduler, precision: str, max_grad_norm: float = MAX_GRAD_NORM):
        import torch

        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.precision, self.max_grad_norm = precision, max_grad_norm
        self.device = next(model.parameters()).device.type
        # Loss scaling only for fp16: bf16 has fp32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler(self.device, enabled=precision == "fp16")

    def __call__(self, loss_fn: Callable[[], object]) -> float:
        """Run ``loss_fn()`` (the forward pass, returning a scalar loss) and take one step.

        Returns the loss. With fp16, a step whose gradients overflowed is skipped (and the
        scale lowered), as is its learning-rate schedule step.
        """
        import torch

        from cluster.models.device import autocast

        self.model.train()
        with autocast(self.precision, self.device):
            loss = loss_fn()
        self.scaler.scale(loss.float()).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # skipped when the gradients hold inf/nan
        self.scaler.update()
        if not self.scaler.is_enabled() or self.scaler.get_scale() >= scale:  # the step ran
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
