"""The optimiser: :func:`create_optimizer` (as timm names it) and the default learning rate of a model."""

from __future__ import annotations

import torch
from torch import nn

from fh_utils.models.config import ModelConfig, backbone_defaults
from fh_utils.training.config import TrainConfig


def create_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or Adam) at ``cfg.lr``, with ``cfg.weight_decay`` on weights and none on biases and norm parameters.

    The decay split is timm's optimizer factory's: parameters of one dimension or named ``*.bias`` decay 0.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def default_lr(model: ModelConfig) -> float:
    """The learning rate ``lr = 0`` (automatic) stands for, from the backbone's defaults.

    With pretrained weights its fine-tuning rate (5e-6 for the seed's EVA02), else its from-scratch rate (1e-4):
    :func:`fh_utils.models.config.backbone_defaults`.
    """
    defaults = backbone_defaults(model.backbone)
    return defaults.finetune_lr if model.uses_pretrained else defaults.lr


def resolve_lr(lr: float | None, model: ModelConfig) -> float:
    """``lr``, or :func:`default_lr` of ``model`` when it is 0 or None (automatic)."""
    return float(lr or default_lr(model))
