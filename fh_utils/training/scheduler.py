"""The learning-rate schedule: :func:`create_scheduler` (as timm names it) and how the loop steps it.

The schedule counts optimizer updates: :class:`UpdateCounter` tells the loop whether a step updated the weights
(a GradScaler skips the update of an fp16 step whose gradients overflowed), and :func:`step_scheduler` advances
the schedule after each update, per fractional epoch for ``cosine_restarts`` and per step otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fh_utils.training.config import TrainConfig


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """The schedule of ``cfg.scheduler`` for ``optimizer``.

    ``"cosine_restarts"``: CosineAnnealingWarmRestarts(T_0=``t_0``, T_mult=``t_mult``, eta_min=``min_lr``),
    stepped per fractional epoch. ``"warmup_cosine"``: linear warm-up over ``warmup_epochs``, then a cosine from
    ``lr`` to ``min_lr`` over the remaining steps of ``epochs``. ``"none"``: a constant ``lr``.
    """
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.t_0, T_mult=cfg.t_mult,
                                                                    eta_min=cfg.min_lr)  # fmt: skip
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if cfg.scheduler == "none":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_scheduler(scheduler: Any, cfg: TrainConfig, epoch: int, i: int, n: int) -> None:
    """Advance the schedule after step ``i`` of ``n`` in ``epoch`` (0-based) made an update."""
    if cfg.scheduler == "cosine_restarts":
        scheduler.step(epoch + (i + 1) / n)  # fractional epochs, as the seed stepped it
    else:
        scheduler.step()


class UpdateCounter:
    """Counts the updates an optimizer makes (its step post-hook: no read from the device).

    With fp16 the GradScaler skips the update of a step whose gradients overflowed (the first steps, while it
    finds its scale); the scheduler then does not step either, so the schedule counts updates, as accelerate's
    scheduler wrapper does (``step_was_skipped``), and torch's "``lr_scheduler.step()`` before
    ``optimizer.step()``" warning has no cause. Without fp16 every step updates: nothing changes.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.count = 0
        optimizer.register_step_post_hook(self._updated)

    def _updated(self, *_: Any) -> None:
        self.count += 1
