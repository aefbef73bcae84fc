"""The training losses: cross-entropy per head, optionally logit-adjusted (Menon et al., 2021), summed over heads."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fh_utils.tasks import Task
from fh_utils.training.config import TrainConfig


def class_priors(targets: np.ndarray, task: Task) -> dict[str, torch.Tensor]:
    """Training class frequencies of every head (for logit adjustment) from ``(N, n_heads)`` targets."""
    priors = {}
    for j, head in enumerate(task.heads):
        counts = np.bincount(targets[:, j], minlength=head.num_classes) + 1e-3  # float64: int counts + a float
        priors[head.column] = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    return priors


def logit_adjusted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    log_prior: torch.Tensor,
    tau: float = 1.0,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logit-adjusted cross-entropy (Menon et al., 2021): CE on ``logits + tau * log(prior)``.

    Training against prior-shifted logits makes the raw logits estimate the balanced posterior, so predicting
    with the raw logits maximises mean per-class accuracy. ``tau=1`` equals the balanced softmax loss.

    Args:
        logits: ``(B, C)`` logits.
        target: ``(B,)`` class ids.
        log_prior: ``(C,)`` log class frequencies (``class_priors(...)[column].log()``); moved to the logits'
            device and dtype.
        tau: Strength of the adjustment (0: plain cross-entropy).
        label_smoothing: Cross-entropy label smoothing.
        weight: ``(C,)`` class weights of the cross-entropy (deferred re-weighting), or None.
    """
    return F.cross_entropy(logits + tau * log_prior.to(logits), target, weight=weight,
                           label_smoothing=label_smoothing)  # fmt: skip


class MultiHeadLoss(nn.Module):
    """Sum over heads of (optionally logit-adjusted) cross-entropy, with per-head weights.

    ``class_weights`` (``{column: (C,) tensor}`` on the loss's device, or None) weights each head's classes; the
    engine sets it for the re-weighted epochs of deferred re-weighting only (:mod:`fh_utils.training.rebalance`).
    """

    def __init__(self, task: Task, cfg: TrainConfig, priors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.task = task
        self.smoothing = cfg.label_smoothing
        self.weights = {h.column: float((cfg.head_weights or {}).get(h.column, 1.0)) for h in task.heads}
        self.priors = priors if cfg.loss == "logit_adjust" else None
        self.tau = cfg.logit_adjust_tau
        self.class_weights: dict[str, torch.Tensor] | None = None
        # log(prior) once, as buffers: .to(device) moves them, so no step copies a CPU tensor to the GPU (a sync).
        for j, head in enumerate(task.heads):
            if self.priors is not None:
                self.register_buffer(f"log_prior_{j}", self.priors[head.column].log(), persistent=False)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the heads' losses; ``targets`` is ``(B, n_heads)``."""
        total = 0.0
        for j, head in enumerate(self.task.heads):
            logits, y = outputs[head.column].float(), targets[:, j]
            weight = self.class_weights[head.column] if self.class_weights is not None else None
            if self.priors is not None:
                log_prior = getattr(self, f"log_prior_{j}")
                loss = logit_adjusted_loss(logits, y, log_prior, self.tau, self.smoothing, weight)
            else:
                loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=self.smoothing)
            total = total + self.weights[head.column] * loss
        return total
