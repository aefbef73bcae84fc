"""Deferred re-balancing (Cao et al., 2019): plain sampling first, class re-balancing from a given epoch on.

``TrainConfig.rebalance``:

- ``"sampler"`` (DRS): from ``rebalance_epoch`` the epochs draw from the class-balanced sampler (each class of the
  sampler head equally often, with replacement; the same sampler ``DataConfig.sampler="balanced"`` uses);
- ``"reweight"`` (DRW): from ``rebalance_epoch`` every head's loss weights its classes by the inverse effective
  number of samples, ``(1 - beta) / (1 - beta ** n_c)`` with beta ``TrainConfig.drw_beta`` (default 0.9999, Cui
  et al., 2019, as LDAM-DRW uses them), normalised to mean 1 over the classes present. With a few thousand images
  per class this is close to inverse frequency (``1 - beta ** n ~ n (1 - beta)`` while ``n << 1 / (1 - beta)``);
  a smaller beta flattens the weights of the classes above ``1 / (1 - beta)`` photos.

Which epochs re-balance is a function of the epoch alone (:class:`Rebalancer`), so a run resumed from ``last.pt``
switches exactly where an uninterrupted one does. The validation loss is never weighted: the engine sets the
weights on the loss for the training batches of an epoch only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from fh_utils.data.datasets import create_balanced_sampler
from fh_utils.tasks import Task
from fh_utils.training.config import TrainConfig

DRW_BETA = 0.9999


def first_rebalanced_epoch(cfg: TrainConfig) -> int:
    """The first re-balanced epoch, 1-based: ``rebalance_epoch``, or for 0 the start of the run's last fifth."""
    return cfg.rebalance_epoch or cfg.epochs * 4 // 5 + 1


def effective_number_weights(counts: np.ndarray, beta: float = DRW_BETA) -> np.ndarray:
    """Class weights ``(1 - beta) / (1 - beta ** n)`` normalised to mean 1 over the classes with samples (0 else)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    return weights * present.sum() / weights.sum()


def class_weights(targets: np.ndarray, task: Task, beta: float = DRW_BETA) -> dict[str, torch.Tensor]:
    """Every head's :func:`effective_number_weights` from the ``(N, n_heads)`` training targets."""
    return {h.column: torch.tensor(effective_number_weights(np.bincount(targets[:, j], minlength=h.num_classes),
                                                            beta), dtype=torch.float32)
            for j, h in enumerate(task.heads)}  # fmt: skip


def sampler_head(loader: DataLoader, task: Task) -> str:
    """The head a balanced sampler of ``loader`` balances: its dataset's ``sampler_head``, else the first head."""
    return getattr(loader.dataset, "sampler_head", "") or task.heads[0].column


def balanced_loader(loader: DataLoader, task: Task, head: str = "") -> DataLoader:
    """``loader`` with the class-balanced sampler of ``head`` (default :func:`sampler_head`) in place of its own.

    Everything else is kept: dataset, batch size, ``drop_last``, workers and their seeding, and the generator
    object itself, so :func:`fh_utils.data.datasets.seed_epoch` seeds the new sampler as it seeded the old one.
    """
    dataset = loader.dataset
    chosen = task.head(head or sampler_head(loader, task))
    labels = np.asarray(dataset.targets)[:, task.heads.index(chosen)]
    sampler = create_balanced_sampler(labels, chosen.num_classes, loader.generator)
    extra = {"prefetch_factor": loader.prefetch_factor, "multiprocessing_context": loader.multiprocessing_context} \
        if loader.num_workers > 0 else {}  # fmt: skip
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator, timeout=loader.timeout,
                      persistent_workers=loader.persistent_workers, **extra)  # fmt: skip


def is_balanced(loader: DataLoader) -> bool:
    """Whether ``loader`` already draws class-balanced batches (a weighted sampler)."""
    return isinstance(loader.sampler, WeightedRandomSampler)


class Rebalancer:
    """Which loader and which class weights each epoch of a run trains with (``TrainConfig.rebalance``).

    Args:
        cfg: The training configuration.
        task: The task (its heads).
        train_loader: The run's training loader (plain sampling).
        device: Where the loss's class weights live.

    Raises:
        ValueError: Re-balancing asked for on a loader that is class-balanced from the first epoch.
    """

    def __init__(self, cfg: TrainConfig, task: Task, train_loader: DataLoader, device: torch.device | str = "cpu"):
        self.mode, self.task, self.device, self.beta = cfg.rebalance, task, device, cfg.drw_beta
        self.first = first_rebalanced_epoch(cfg)
        if self.mode != "none" and is_balanced(train_loader):
            raise ValueError(f"rebalance={self.mode!r} defers class re-balancing to epoch {self.first}, but the "
                             "train loader is class-balanced from the first epoch: build it with "
                             "sampler='shuffle' (notebooks: rebalance replaces imbalance='sampler')")  # fmt: skip
        self._source: DataLoader | None = None
        self._balanced: DataLoader | None = None
        self._weights: dict[str, torch.Tensor] | None = None

    def active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based, as ``TrainingState.epoch``) is re-balanced."""
        return self.mode != "none" and epoch + 1 >= self.first

    def loader(self, loader: DataLoader, epoch: int) -> DataLoader:
        """The loader epoch ``epoch`` draws from: ``loader``, or its class-balanced copy (built once) under DRS."""
        if self.mode != "sampler" or not self.active(epoch):
            return loader
        if self._source is not loader:
            self._source, self._balanced = loader, balanced_loader(loader, self.task)
        return self._balanced

    def class_weights(self, loader: DataLoader, epoch: int) -> dict[str, torch.Tensor] | None:
        """The loss's class weights for epoch ``epoch``: None, or under DRW (computed once, on the device)."""
        if self.mode != "reweight" or not self.active(epoch):
            return None
        if self._weights is None:
            weights = class_weights(np.asarray(loader.dataset.targets), self.task, self.beta)
            self._weights = {k: v.to(self.device) for k, v in weights.items()}
        return self._weights
