"""What a run saves to continue and to predict: :class:`TrainingState` (``last.pt``) and its weights (``best.pt``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fh_utils.io import atomic_write


@dataclass
class TrainingState:
    """Everything a run needs to continue after an interruption; ``last.pt`` is its :meth:`state_dict`.

    The RNGs are not part of it: every epoch re-seeds them from ``(seed, epoch)`` (see
    :func:`fh_utils.data.datasets.seed_epoch`), which is what makes a resumed run replay exactly.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: nn.Module | None = None
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and kept as ``best.pt``: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and tensors only (``torch.load(weights_only=True)`` reads it back)."""
        return {
            "model": self.model.state_dict(),
            "model_config": getattr(self.model, "model_config", {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output; ``epoch`` becomes the next epoch to train."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.history, self.epoch = list(ckpt["history"]), int(ckpt["epoch"]) + 1
        self.best_score, self.best_epoch, self.bad_epochs = ckpt["best_score"], ckpt["best_epoch"], ckpt["bad_epochs"]

    def save(self, path: Path) -> None:
        """Write :meth:`state_dict` atomically."""
        state = self.state_dict()
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path, device: torch.device | str) -> None:
        """Continue from the :meth:`save` file ``path`` (``torch.load(weights_only=True)`` onto ``device``)."""
        self.load_state_dict(torch.load(path, map_location=device, weights_only=True))

    def save_weights(self, path: Path) -> None:
        """Write the evaluated weights alone (``best.pt``): what :func:`fh_utils.models.load_model` reads."""
        model = self.eval_model
        state = {"model": model.state_dict(), "model_config": getattr(self.model, "model_config", {}),
                 "epoch": self.epoch, "best_score": self.best_score}  # fmt: skip
        atomic_write(path, lambda tmp: torch.save(state, tmp))
